use std::{collections::BTreeMap as Map, fs};

use chrono::Days;

use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn net(x: &str) -> Ipv6Net {
    x.parse().unwrap()
}

fn day(x: &str) -> NaiveDate {
    parse_date(x).unwrap()
}

/// Every file in `dir` with its bytes: "nothing on disk changed" is
/// `snapshot` before == `snapshot` after.
fn snapshot(dir: &Path) -> Map<String, Vec<u8>> {
    match fs::read_dir(dir) {
        Err(_) => Map::new(),
        Ok(rd) => rd
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect(),
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), text).unwrap();
}

/// Load must fail; returns the message after checking that nothing on
/// disk changed.
fn load_err(dir: &Path) -> String {
    let before = snapshot(dir);
    let e = format!("{:#}", Store::load(dir).unwrap_err());
    assert_eq!(snapshot(dir), before);
    e
}

fn one(dir: &Path, text: &str) -> String {
    write(dir, "p.toml", text);
    load_err(dir)
}

const GOOD: &str = r#"
[[partner]]
name = "example-isp"
prefixes = ["2001:db8:1000::/36", "2001:db8:2::25/128"]
note = "their outbound MTAs, ticket #123"
expires = "2027-03-31"

[[partner]]
name = "other"
prefixes = ["2001:db8:3::1"]
"#;

#[test]
fn missing_dir_is_refused_and_new_only_for_edits() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("nope");
    let e = Store::load(&dir).unwrap_err();
    let r = StoreRefused::of(&e).expect("a refusal");
    assert_eq!(r.kind, RefusedKind::Missing);
    assert!(r.message.contains(&dir.display().to_string()), "{r}");
    assert!(r.message.contains("does not exist"), "{r}");
    let st = Store::load_or_new(&dir).unwrap();
    assert!(st.partners.is_empty());
    assert_eq!((st.prefix_count(), st.files), (0, 0));
    assert!(!dir.exists());
    // A file where the directory should be: refused, not "no partners".
    fs::write(&dir, "x").unwrap();
    let e = Store::load(&dir).unwrap_err();
    assert_eq!(StoreRefused::of(&e).unwrap().kind, RefusedKind::Unreadable);
    assert!(Store::load_or_new(&dir).is_err());
}

#[test]
fn files_are_counted_and_an_empty_file_is_a_store() {
    let t = tempfile::tempdir().unwrap();
    assert_eq!(Store::load(t.path()).unwrap().files, 0);
    write(t.path(), "none.toml", "");
    let st = Store::load(t.path()).unwrap();
    assert_eq!((st.files, st.partners.len()), (1, 0));
}

#[test]
fn a_fifo_or_directory_named_toml_is_skipped_never_opened() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "a.toml",
        "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8::/32\"]\n",
    );
    let fifo = t.path().join("x.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    fs::create_dir(t.path().join("d.toml")).unwrap();
    // No writer on the FIFO: a blocking open would hang here.
    let st = Store::load(t.path()).unwrap();
    assert_eq!(st.partners.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(st.files, 1);
    assert_eq!(st.skipped.len(), 2, "{:?}", st.skipped);
    assert!(st
        .skipped
        .iter()
        .any(|s| s.contains("x.toml") && s.contains("a FIFO")));
    assert!(st
        .skipped
        .iter()
        .any(|s| s.contains("d.toml") && s.contains("a directory")));
}

#[test]
fn lenient_load_keeps_the_good_files_and_names_the_bad() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "a.toml",
        "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8:1::/48\"]\n",
    );
    write(t.path(), "b.toml", "[[partner]\n");
    // Conflicts with a.toml: refused whole, a.toml kept.
    write(
        t.path(),
        "c.toml",
        "[[partner]]\nname = \"c\"\nprefixes = [\"2001:db8:3::/48\"]\n[[partner]]\nname = \"c2\"\nprefixes = [\"2001:db8:1::/48\"]\n",
    );
    let (st, refused) = Store::load_lenient(t.path());
    assert_eq!(st.partners.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(
        refused[0].file.as_deref(),
        Some(t.path().join("b.toml").as_path())
    );
    assert_eq!(
        refused[1].file.as_deref(),
        Some(t.path().join("c.toml").as_path())
    );
    assert!(
        refused[1]
            .message
            .contains("already allowed for partner \"a\""),
        "{}",
        refused[1]
    );
    // The strict load stops at the first.
    let e = load_err(t.path());
    assert!(e.contains("b.toml"), "{e}");
}

#[test]
fn prefixes_no_mail_server_sends_from_are_refused_by_name() {
    for (p, why) in [
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::1/128", "loopback"),
        ("::/1", "covers ::/128"),
        ("8000::/1", "covers fe80::/10"),
        ("fe80::/10", "link-local"),
        ("fe80::1:2:3:4", "link-local"),
        ("febf::/16", "link-local"),
        ("ff00::/8", "multicast"),
        ("ff02::1", "multicast"),
        ("fec0::/10", "site-local"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b::c633:6402", "NAT64"),
        ("64:ff9b:1::/48", "NAT64"),
        ("100::/64", "discard-only"),
        ("::c633:6402", "IPv4-compatible"),
        ("::fffe:0:0/95", "IPv4-mapped"),
    ] {
        for allow_short in [false, true] {
            let e = format!("{:#}", parse_cli_prefix(p, allow_short).unwrap_err());
            assert!(
                e.contains(&format!("{p:?}"))
                    && e.contains(why)
                    && e.contains("no mail server sends from there"),
                "{p} (allow_short {allow_short}) => {e}"
            );
        }
    }
    // Next to them, what is fine.
    for ok in [
        "2001:db8::/32",
        "fd00:1::/48",
        "2002:c633:6402::/48",
        "64:ff9c::/32",
        "2001::/32",
    ] {
        parse_cli_prefix(ok, false).unwrap();
    }
}

#[test]
fn short_prefixes_need_the_flag_and_the_message_says_why() {
    for p in ["2000::/3", "2000::/15", "2400::/12"] {
        let e = format!("{:#}", parse_cli_prefix(p, false).unwrap_err());
        assert!(
            e.contains(&format!("{p:?}"))
                && e.contains("shorter than /16")
                && e.contains("any registry gives one organisation")
                && e.contains("--allow-short-prefix"),
            "{p} => {e}"
        );
        assert_eq!(parse_cli_prefix(p, true).unwrap().0, net(p));
    }
    assert_eq!(
        parse_cli_prefix("2001::/16", false).unwrap().0,
        net("2001::/16")
    );
    // In a file: refused unless the partner says so, with the key named.
    let t = tempfile::tempdir().unwrap();
    let e = one(
        t.path(),
        "[[partner]]\nname = \"big\"\nprefixes = [\"2400::/12\"]\n",
    );
    assert!(
        e.contains("\"big\"") && e.contains("allow_short_prefixes = true"),
        "{e}"
    );
    write(
        t.path(),
        "p.toml",
        "[[partner]]\nname = \"big\"\nprefixes = [\"2400::/12\"]\nallow_short_prefixes = true\n",
    );
    assert!(Store::load(t.path()).unwrap().partners["big"].allow_short);
}

#[test]
fn the_flag_is_remembered_in_the_partner_file() {
    let t = tempfile::tempdir().unwrap();
    let mut st = Store::load(t.path()).unwrap();
    let e = format!(
        "{:#}",
        st.add("big", &s(&["2400::/12"]), None, None, false)
            .unwrap_err()
    );
    assert!(e.contains("--allow-short-prefix"), "{e}");
    st.add("big", &s(&["2400::/12"]), None, None, true).unwrap();
    st.save("big").unwrap();
    let text = fs::read_to_string(t.path().join("big.toml")).unwrap();
    assert!(text.contains("allow_short_prefixes = true"), "{text}");
    let mut back = Store::load(t.path()).unwrap();
    assert_eq!(back.partners, st.partners);
    // Once allowed for a partner, more short ones need no flag again.
    back.add("big", &s(&["2a00::/12"]), None, None, false)
        .unwrap();
    // A file without any short prefix does not carry the key.
    back.add("small", &s(&["2001:db8::/32"]), None, None, false)
        .unwrap();
    back.save("small").unwrap();
    assert!(!fs::read_to_string(t.path().join("small.toml"))
        .unwrap()
        .contains("allow_short"));
}

#[test]
fn a_prefix_refused_by_the_new_rules_can_still_be_removed() {
    let t = tempfile::tempdir().unwrap();
    let mut st = Store::load(t.path()).unwrap();
    // As a store written before the rules might hold it.
    st.partners.insert(
        "old".into(),
        Partner {
            name: "old".into(),
            prefixes: vec![net("fe80::/10"), net("2001:db8::/32")],
            spf: vec![],
            note: None,
            expires: None,
            allow_short: false,
            file: t.path().join("old.toml"),
        },
    );
    st.remove("old", &s(&["fe80::/10"])).unwrap();
    assert_eq!(st.partners["old"].prefixes, vec![net("2001:db8::/32")]);
}

#[test]
fn one_big_partner_loads_adds_and_removes() {
    // (How fast, against the same prefixes spread over many partners:
    // `cargo xtask bench`, part "store".)
    let t = tempfile::tempdir().unwrap();
    let n = 50_000u32;
    let mut text = String::from("[[partner]]\nname = \"big\"\nprefixes = [\n");
    for i in 0..n {
        text.push_str(&format!(
            "\"2001:db8:{:x}:{:x}::/64\",\n",
            i >> 16,
            i & 0xffff
        ));
    }
    text.push_str("]\n");
    write(t.path(), "big.toml", &text);
    let mut st = Store::load(t.path()).unwrap();
    assert_eq!(st.prefix_count(), n as usize);
    let more: Vec<String> = (0..5_000u32)
        .map(|i| format!("2001:db9:{i:x}::/48"))
        .collect();
    let notices = st.add("big", &more[..2], None, None, false).unwrap();
    assert!(notices.is_empty(), "{notices:?}");
    let notices = st.add("big", &more, None, None, false).unwrap();
    assert_eq!(notices.len(), 2, "the two already there: {notices:?}");
    assert_eq!(st.prefix_count(), n as usize + more.len());
    st.remove("big", &more).unwrap();
    assert_eq!(st.prefix_count(), n as usize);
    let e = format!("{:#}", st.remove("big", &more[..1]).unwrap_err());
    assert!(e.contains("has no prefix 2001:db9::/48"), "{e}");
}

#[test]
fn loads_example_file() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "cm.toml", GOOD);
    let st = Store::load(t.path()).unwrap();
    assert_eq!(st.partners.len(), 2);
    let p = &st.partners["example-isp"];
    assert_eq!(
        p.prefixes,
        vec![net("2001:db8:1000::/36"), net("2001:db8:2::25/128")]
    );
    assert_eq!(p.note.as_deref(), Some("their outbound MTAs, ticket #123"));
    assert_eq!(p.expires, Some(day("2027-03-31")));
    assert_eq!(p.file, t.path().join("cm.toml"));
    // A bare address means /128.
    assert_eq!(
        st.partners["other"].prefixes,
        vec![net("2001:db8:3::1/128")]
    );
    assert_eq!(st.prefix_count(), 3);
}

#[test]
fn ignores_hidden_temp_and_other_files() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "a.toml",
        "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8::/32\"]\n",
    );
    // A crash mid-write leaves such files; they never count, even broken.
    write(t.path(), ".a.toml.tmp.1234.0", "garbage [[[");
    write(t.path(), ".x.tmp", "garbage [[[");
    write(t.path(), ".hidden.toml", "garbage [[[");
    write(t.path(), "README", "garbage [[[");
    write(t.path(), "b.toml.bak", "garbage [[[");
    write(t.path(), "b.toml~", "garbage [[[");
    let st = Store::load(t.path()).unwrap();
    assert_eq!(st.partners.keys().collect::<Vec<_>>(), vec!["a"]);
}

#[test]
fn empty_file_and_bare_date_are_fine() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "empty.toml", "# nothing yet\n");
    write(
        t.path(),
        "d.toml",
        "[[partner]]\nname = \"d\"\nprefixes = [\"2001:db8::/48\"]\nexpires = 2030-01-02\n",
    );
    let st = Store::load(t.path()).unwrap();
    assert_eq!(st.partners["d"].expires, Some(day("2030-01-02")));
}

#[test]
fn file_errors_name_file_partner_and_item() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let f = d.join("p.toml").display().to_string();
    let cases: &[(&str, &[&str])] = &[
        // IPv4 is never gated.
        ("[[partner]]\nname = \"v4\"\nprefixes = [\"192.0.2.0/24\"]", &["\"v4\"", "\"192.0.2.0/24\"", "IPv4 is never gated"]),
        ("[[partner]]\nname = \"v4\"\nprefixes = [\"198.51.100.7\"]", &["\"v4\"", "\"198.51.100.7\"", "IPv4"]),
        ("[[partner]]\nname = \"v4\"\nprefixes = [\"::ffff:198.51.100.7\"]", &["\"::ffff:198.51.100.7\"", "IPv4"]),
        // Host bits: refused in files, naming the normalized form.
        ("[[partner]]\nname = \"hb\"\nprefixes = [\"2001:db8::1/32\"]", &["\"hb\"", "\"2001:db8::1/32\"", "host bits", "2001:db8::/32"]),
        // ::/0.
        ("[[partner]]\nname = \"all\"\nprefixes = [\"::/0\"]", &["\"all\"", "\"::/0\"", "every IPv6 source", "remove the gate"]),
        // Garbage prefixes.
        ("[[partner]]\nname = \"g\"\nprefixes = [\"2001:db8::/129\"]", &["\"g\"", "\"2001:db8::/129\"", "prefix length"]),
        ("[[partner]]\nname = \"g\"\nprefixes = [\"2001:db8::/\"]", &["\"2001:db8::/\"", "prefix length"]),
        ("[[partner]]\nname = \"g\"\nprefixes = [\"2001:db8::/+32\"]", &["\"2001:db8::/+32\""]),
        ("[[partner]]\nname = \"g\"\nprefixes = [\"mx.example.com\"]", &["\"mx.example.com\"", "not an IPv6 prefix"]),
        // Same prefix twice in one partner.
        ("[[partner]]\nname = \"dup\"\nprefixes = [\"2001:db8::/32\", \"2001:db8::/32\"]", &["\"dup\"", "2001:db8::/32", "twice"]),
        // No prefixes.
        ("[[partner]]\nname = \"none\"\nprefixes = []", &["\"none\"", "no prefixes"]),
        // Bad names.
        ("[[partner]]\nname = \"-x\"\nprefixes = [\"2001:db8::/32\"]", &["\"-x\"", "not a valid partner name"]),
        ("[[partner]]\nname = \"a/b\"\nprefixes = [\"2001:db8::/32\"]", &["\"a/b\"", "not a valid partner name"]),
        ("[[partner]]\nname = \"\"\nprefixes = [\"2001:db8::/32\"]", &["\"\"", "not a valid partner name"]),
        // Bad dates.
        ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = \"31.03.2027\"", &["\"e\"", "expires", "\"31.03.2027\"", "YYYY-MM-DD"]),
        ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = \"2027-02-30\"", &["\"e\"", "\"2027-02-30\""]),
        ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = \"2027-3-5\"", &["\"2027-3-5\""]),
        ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = 20270331", &["expires", "20270331"]),
        ("[[partner]]\nname = \"e\"\nprefixes = [\"2001:db8::/32\"]\nexpires = 2027-03-31T10:00:00", &["expires", "2027-03-31T10:00:00"]),
        // Unknown key, missing key, syntax: toml's own message, with position.
        ("[[partner]]\nname = \"u\"\nprefix = [\"2001:db8::/32\"]", &["`prefix`", "line 3"]),
        ("[[partner]]\nname = \"m\"", &["\"m\"", "no prefixes and no spf domains"]),
        // SPF domains.
        ("[[partner]]\nname = \"s\"\nspf = [\"not a domain\"]", &["\"s\"", "\"not a domain\"", "not a domain name"]),
        ("[[partner]]\nname = \"s\"\nspf = [\"a.example\", \"A.example.\"]", &["\"s\"", "a.example", "twice"]),
        ("[[partner]\nname = \"s\"", &["line 1"]),
        ("[partner]\nname = \"s\"", &["line 1"]),
    ];
    for (text, wants) in cases {
        let e = one(d, text);
        assert!(e.starts_with(&format!("{f}: ")), "{text}\n=> {e}");
        for w in *wants {
            assert!(e.contains(w), "{text}\n=> {e}\nmissing {w}");
        }
    }
}

#[test]
fn a_bad_file_refuses_the_whole_store() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "a.toml",
        "[[partner]]\nname = \"a\"\nprefixes = [\"2001:db8::/32\"]\n",
    );
    write(
        t.path(),
        "z.toml",
        "[[partner]]\nname = \"z\"\nprefixes = [\"10.0.0.0/8\"]\n",
    );
    let e = load_err(t.path());
    assert!(e.contains("z.toml") && e.contains("10.0.0.0/8"), "{e}");
}

#[test]
fn same_name_in_two_files_names_both() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "a.toml",
        "[[partner]]\nname = \"acme\"\nprefixes = [\"2001:db8:1::/48\"]\n",
    );
    write(
        t.path(),
        "b.toml",
        "[[partner]]\nname = \"acme\"\nprefixes = [\"2001:db8:2::/48\"]\n",
    );
    let e = load_err(t.path());
    assert!(e.contains("\"acme\""), "{e}");
    assert!(
        e.contains(&t.path().join("a.toml").display().to_string()),
        "{e}"
    );
    assert!(
        e.contains(&t.path().join("b.toml").display().to_string()),
        "{e}"
    );
}

#[test]
fn same_name_twice_in_one_file() {
    let t = tempfile::tempdir().unwrap();
    let e = one(
        t.path(),
        "[[partner]]\nname = \"acme\"\nprefixes = [\"2001:db8:1::/48\"]\n[[partner]]\nname = \"acme\"\nprefixes = [\"2001:db8:2::/48\"]\n",
    );
    assert!(e.contains("\"acme\"") && e.contains("p.toml"), "{e}");
}

#[test]
fn same_prefix_in_two_partners_names_prefix_and_both() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "a.toml",
        "[[partner]]\nname = \"alpha\"\nprefixes = [\"2001:db8:1::/48\"]\n",
    );
    // Same network, written differently.
    write(
        t.path(),
        "b.toml",
        "[[partner]]\nname = \"beta\"\nprefixes = [\"2001:0db8:0001:0::/48\"]\n",
    );
    let e = load_err(t.path());
    assert!(e.contains("2001:db8:1::/48"), "{e}");
    assert!(e.contains("\"alpha\"") && e.contains("\"beta\""), "{e}");
    assert!(e.contains("a.toml") && e.contains("b.toml"), "{e}");
}

#[test]
fn overlapping_prefixes_are_fine_and_longest_match_wins() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "x.toml",
        r#"
[[partner]]
name = "big"
prefixes = ["2001:db8::/32"]
[[partner]]
name = "mid"
prefixes = ["2001:db8:1::/48"]
expires = "2000-01-01"
[[partner]]
name = "host"
prefixes = ["2001:db8:1::25"]
"#,
    );
    let st = Store::load(t.path()).unwrap();
    let look = |a: &str| {
        st.lookup(a.parse().unwrap())
            .map(|(p, n)| (p.name.clone(), n))
    };
    assert_eq!(
        look("2001:db8:1::25"),
        Some(("host".into(), net("2001:db8:1::25/128")))
    );
    // Expired partners still match: the caller reports expiry.
    assert_eq!(
        look("2001:db8:1::26"),
        Some(("mid".into(), net("2001:db8:1::/48")))
    );
    assert_eq!(
        look("2001:db8:2::1"),
        Some(("big".into(), net("2001:db8::/32")))
    );
    assert_eq!(look("2001:db9::1"), None);
    assert_eq!(look("::ffff:198.51.100.1"), None);
}

#[test]
fn expiry_boundaries() {
    let p = Partner {
        name: "p".into(),
        prefixes: vec![net("2001:db8::/32")],
        spf: vec![],
        note: None,
        expires: Some(day("2027-03-31")),
        allow_short: false,
        file: PathBuf::from("/x/p.toml"),
    };
    assert!(p.is_active(day("2027-03-30")));
    assert!(
        p.is_active(day("2027-03-31")),
        "allowed through its last day"
    );
    assert!(!p.is_active(day("2027-04-01")));
    let forever = Partner {
        expires: None,
        ..p.clone()
    };
    assert!(forever.is_active(day("9999-12-31")));

    let mut st = Store::empty(Path::new("/x"));
    st.partners.insert("p".into(), p);
    st.partners.insert(
        "q".into(),
        Partner {
            name: "q".into(),
            prefixes: vec![net("2001:db8:ffff::/48"), net("2001:db8:1::/48")],
            spf: vec![],
            note: None,
            expires: None,
            allow_short: false,
            file: PathBuf::from("/x/q.toml"),
        },
    );
    let names = |d: &str| st.active_prefixes(day(d));
    assert_eq!(
        names("2027-03-31"),
        vec![
            (net("2001:db8::/32"), "p".to_string()),
            (net("2001:db8:1::/48"), "q".to_string()),
            (net("2001:db8:ffff::/48"), "q".to_string()),
        ]
    );
    assert_eq!(
        names("2027-04-01"),
        vec![
            (net("2001:db8:1::/48"), "q".to_string()),
            (net("2001:db8:ffff::/48"), "q".to_string())
        ]
    );
    assert_eq!(st.prefix_count(), 3);
}

#[test]
fn add_new_partner_and_save_writes_its_own_file() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("partners.d");
    let mut st = Store::load_or_new(&dir).unwrap();
    let notices = st
        .add(
            "acme",
            &s(&["2001:db8:1::/48", "2001:db8:2::25"]),
            Some("ticket #1".into()),
            None,
            false,
        )
        .unwrap();
    assert!(notices.is_empty(), "{notices:?}");
    st.save("acme").unwrap();
    assert_eq!(snapshot(&dir).keys().collect::<Vec<_>>(), vec!["acme.toml"]);
    let back = Store::load(&dir).unwrap();
    assert_eq!(back.partners, st.partners);
    assert_eq!(
        back.partners["acme"].prefixes,
        vec![net("2001:db8:1::/48"), net("2001:db8:2::25/128")]
    );
    assert_eq!(back.partners["acme"].file, dir.join("acme.toml"));
    let text = fs::read_to_string(dir.join("acme.toml")).unwrap();
    assert!(
        text.contains("[[partner]]") && text.contains("name = \"acme\""),
        "{text}"
    );
}

#[test]
fn add_normalizes_host_bits_with_notice() {
    let t = tempfile::tempdir().unwrap();
    let mut st = Store::load(t.path()).unwrap();
    let n = st
        .add("acme", &s(&["2001:db8::1/32"]), None, None, false)
        .unwrap();
    assert_eq!(
        n,
        vec!["2001:db8::1/32 has host bits set; stored as 2001:db8::/32".to_string()]
    );
    assert_eq!(st.partners["acme"].prefixes, vec![net("2001:db8::/32")]);
}

#[test]
fn add_more_prefixes_and_replace_metadata() {
    let t = tempfile::tempdir().unwrap();
    let mut st = Store::load(t.path()).unwrap();
    let future = today_utc().checked_add_days(Days::new(30)).unwrap();
    st.add(
        "acme",
        &s(&["2001:db8:1::/48"]),
        Some("first".into()),
        Some(future.to_string()),
        false,
    )
    .unwrap();
    // No note / expires given: kept.
    st.add("acme", &s(&["2001:db8:2::/48"]), None, None, false)
        .unwrap();
    let p = &st.partners["acme"];
    assert_eq!(
        p.prefixes,
        vec![net("2001:db8:1::/48"), net("2001:db8:2::/48")]
    );
    assert_eq!(p.note.as_deref(), Some("first"));
    assert_eq!(p.expires, Some(future));
    // Given: replaced; an empty note clears it; metadata-only update ok.
    st.add(
        "acme",
        &[],
        Some("".into()),
        Some(today_utc().to_string()),
        false,
    )
    .unwrap();
    let p = &st.partners["acme"];
    assert_eq!(p.note, None);
    assert_eq!(p.expires, Some(today_utc()), "today is not in the past");
    // Re-adding a prefix the partner has is a notice, not an error.
    let n = st
        .add(
            "acme",
            &s(&["2001:db8:1::/48", "2001:db8:3::/48", "2001:db8:3::/48"]),
            None,
            None,
            false,
        )
        .unwrap();
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n[0].contains("already in partner \"acme\""), "{n:?}");
    assert!(n[1].contains("more than once"), "{n:?}");
    assert_eq!(st.partners["acme"].prefixes.len(), 3);
}

/// `add` must fail; checks nothing changed in memory or on disk.
fn add_err(
    st: &mut Store,
    name: &str,
    prefixes: &[&str],
    note: Option<&str>,
    expires: Option<&str>,
) -> String {
    let before_mem = st.clone();
    let before_disk = snapshot(&st.dir);
    let e = st
        .add(
            name,
            &s(prefixes),
            note.map(String::from),
            expires.map(String::from),
            false,
        )
        .unwrap_err();
    assert_eq!(*st, before_mem);
    assert_eq!(snapshot(&st.dir), before_disk);
    format!("{e:#}")
}

#[test]
fn add_errors_name_the_item_and_change_nothing() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "beta.toml",
        "[[partner]]\nname = \"beta\"\nprefixes = [\"2001:db8:b::/48\"]\n",
    );
    let mut st = Store::load(t.path()).unwrap();
    st.add("alpha", &s(&["2001:db8:a::/48"]), None, None, false)
        .unwrap();
    st.save("alpha").unwrap();

    let e = add_err(
        &mut st,
        "alpha",
        &["2001:db8:c::/48", "192.0.2.0/24"],
        None,
        None,
    );
    assert!(
        e.contains("\"192.0.2.0/24\"") && e.contains("IPv4 is never gated"),
        "{e}"
    );
    let e = add_err(&mut st, "alpha", &["2001:db8:c::/48", "::/0"], None, None);
    assert!(
        e.contains("\"::/0\"") && e.contains("every IPv6 source"),
        "{e}"
    );
    let e = add_err(
        &mut st,
        "alpha",
        &["2001:db8:c::/48", "2001:db8:b::/48"],
        None,
        None,
    );
    assert!(
        e.contains("2001:db8:b::/48") && e.contains("\"beta\""),
        "{e}"
    );
    // Host bits normalize onto another partner's prefix: still refused.
    let e = add_err(&mut st, "gamma", &["2001:db8:b::1/48"], None, None);
    assert!(
        e.contains("2001:db8:b::/48") && e.contains("\"beta\""),
        "{e}"
    );
    let e = add_err(&mut st, "bad name", &["2001:db8:c::/48"], None, None);
    assert!(
        e.contains("\"bad name\"") && e.contains("partner name"),
        "{e}"
    );
    let long = "x".repeat(65);
    let e = add_err(&mut st, &long, &["2001:db8:c::/48"], None, None);
    assert!(e.contains(&long), "{e}");
    let e = add_err(&mut st, "gamma", &[], None, None);
    assert!(
        e.contains("\"gamma\"") && e.contains("at least one prefix"),
        "{e}"
    );
    let e = add_err(&mut st, "alpha", &[], None, None);
    assert!(
        e.contains("\"alpha\"") && e.contains("at least one prefix"),
        "{e}"
    );
    let e = add_err(
        &mut st,
        "gamma",
        &["2001:db8:c::/48"],
        None,
        Some("2027/03/31"),
    );
    assert!(
        e.contains("\"2027/03/31\"") && e.contains("YYYY-MM-DD"),
        "{e}"
    );
    let yesterday = today_utc().pred_opt().unwrap().to_string();
    let e = add_err(
        &mut st,
        "gamma",
        &["2001:db8:c::/48"],
        None,
        Some(&yesterday),
    );
    assert!(e.contains(&yesterday) && e.contains("in the past"), "{e}");
    let e = add_err(&mut st, "alpha", &["nonsense"], None, None);
    assert!(e.contains("\"nonsense\"") && e.contains("\"alpha\""), "{e}");
    // 64 characters is the limit, inclusive.
    assert!(st
        .add(&"y".repeat(64), &s(&["2001:db8:d::/48"]), None, None, false)
        .is_ok());
}

fn remove_err(st: &mut Store, name: &str, prefixes: &[&str]) -> String {
    let before_mem = st.clone();
    let before_disk = snapshot(&st.dir);
    let e = st.remove(name, &s(prefixes)).unwrap_err();
    assert_eq!(*st, before_mem);
    assert_eq!(snapshot(&st.dir), before_disk);
    format!("{e:#}")
}

#[test]
fn remove_errors_name_the_item_and_change_nothing() {
    let t = tempfile::tempdir().unwrap();
    let mut st = Store::load(t.path()).unwrap();
    st.add(
        "alpha",
        &s(&["2001:db8:a::/48", "2001:db8:aa::/48"]),
        None,
        None,
        false,
    )
    .unwrap();
    st.add("beta", &s(&["2001:db8:b::/48"]), None, None, false)
        .unwrap();
    st.save("alpha").unwrap();
    st.save("beta").unwrap();

    let e = remove_err(&mut st, "nobody", &[]);
    assert!(e.contains("\"nobody\""), "{e}");
    let e = remove_err(&mut st, "alpha", &["2001:db8:a::/48", "2001:db8:c::/48"]);
    assert!(
        e.contains("2001:db8:c::/48") && e.contains("\"alpha\""),
        "{e}"
    );
    let e = remove_err(&mut st, "alpha", &["2001:db8:b::/48"]);
    assert!(
        e.contains("2001:db8:b::/48") && e.contains("belongs to partner \"beta\""),
        "{e}"
    );
    let e = remove_err(&mut st, "alpha", &["198.51.100.0/24"]);
    assert!(e.contains("198.51.100.0/24") && e.contains("IPv4"), "{e}");
}

#[test]
fn remove_prefixes_then_last_prefix_deletes_file() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut st = Store::load(dir).unwrap();
    st.add(
        "alpha",
        &s(&["2001:db8:a::/48", "2001:db8:aa::/48"]),
        None,
        None,
        false,
    )
    .unwrap();
    st.save("alpha").unwrap();
    st.remove("alpha", &s(&["2001:db8:a::1/48"])).unwrap(); // normalized to match
    st.save("alpha").unwrap();
    assert_eq!(
        Store::load(dir).unwrap().partners["alpha"].prefixes,
        vec![net("2001:db8:aa::/48")]
    );
    st.remove("alpha", &s(&["2001:db8:aa::/48"])).unwrap();
    assert!(!st.partners.contains_key("alpha"));
    st.save("alpha").unwrap();
    assert!(snapshot(dir).is_empty());
    assert!(Store::load(dir).unwrap().partners.is_empty());
    // Saving it again is harmless.
    st.save("alpha").unwrap();
    assert!(st.save("never-existed").is_err());
    assert_eq!(st.file_of("alpha"), dir.join("alpha.toml"));
    assert_eq!(st.file_of("never-existed"), dir.join("never-existed.toml"));
}

#[test]
fn remove_whole_partner_from_shared_file_keeps_the_others() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write(dir, "cm.toml", GOOD);
    let mut st = Store::load(dir).unwrap();
    st.remove("other", &[]).unwrap();
    assert_eq!(st.file_of("other"), dir.join("cm.toml"));
    st.save("other").unwrap();
    let back = Store::load(dir).unwrap();
    assert_eq!(
        back.partners.keys().collect::<Vec<_>>(),
        vec!["example-isp"]
    );
    assert_eq!(back.partners["example-isp"], st.partners["example-isp"]);
    assert_eq!(snapshot(dir).keys().collect::<Vec<_>>(), vec!["cm.toml"]);
    // Last partner of the shared file gone: the file goes too.
    st.remove("example-isp", &[]).unwrap();
    st.save("example-isp").unwrap();
    assert!(snapshot(dir).is_empty());
}

#[test]
fn add_to_partner_in_shared_file_rewrites_that_file_in_stable_order() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write(dir, "cm.toml", GOOD);
    let mut st = Store::load(dir).unwrap();
    let n = st
        .add("other", &s(&["2001:db8:4::/48"]), None, None, false)
        .unwrap();
    assert!(n.iter().any(|m| m.contains("cm.toml")), "{n:?}");
    st.save("other").unwrap();
    let first = fs::read(dir.join("cm.toml")).unwrap();
    // No file of its own was created.
    assert_eq!(snapshot(dir).keys().collect::<Vec<_>>(), vec!["cm.toml"]);
    let back = Store::load(dir).unwrap();
    assert_eq!(back.partners, st.partners);
    // Saving again from a fresh load writes the same bytes.
    back.save("example-isp").unwrap();
    assert_eq!(fs::read(dir.join("cm.toml")).unwrap(), first);
}

#[test]
fn remove_then_readd_in_one_session_reuses_file() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write(dir, "cm.toml", GOOD);
    let mut st = Store::load(dir).unwrap();
    st.remove("other", &[]).unwrap();
    st.add("other", &s(&["2001:db8:9::/48"]), None, None, false)
        .unwrap();
    assert_eq!(st.partners["other"].file, dir.join("cm.toml"));
    st.save("other").unwrap();
    assert_eq!(Store::load(dir).unwrap().partners, st.partners);
}

#[test]
fn moving_a_prefix_between_partners() {
    let t = tempfile::tempdir().unwrap();
    let mut st = Store::load(t.path()).unwrap();
    st.add(
        "a",
        &s(&["2001:db8:1::/48", "2001:db8:2::/48"]),
        None,
        None,
        false,
    )
    .unwrap();
    assert!(st
        .add("b", &s(&["2001:db8:2::/48"]), None, None, false)
        .is_err());
    st.remove("a", &s(&["2001:db8:2::/48"])).unwrap();
    st.add("b", &s(&["2001:db8:2::/48"]), None, None, false)
        .unwrap();
    st.save("a").unwrap();
    st.save("b").unwrap();
    assert_eq!(Store::load(t.path()).unwrap().partners, st.partners);
}

#[test]
fn save_is_atomic_and_leftover_temp_is_ignored() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut st = Store::load(dir).unwrap();
    st.add(
        "acme",
        &s(&["2001:db8::/32"]),
        Some("note with \"quotes\"\nand a newline".into()),
        None,
        false,
    )
    .unwrap();
    st.save("acme").unwrap();
    // A crash between temp write and rename leaves a hidden temp file.
    write(
        dir,
        ".acme.toml.tmp.999.0",
        "[[partner]]\nname = \"acme\"\nprefixes = [\"10.0.0.0/8\"]\n",
    );
    write(dir, ".x.tmp", "not toml at all [[[");
    let back = Store::load(dir).unwrap();
    assert_eq!(back.partners, st.partners);
    // Only the target and the leftovers exist; save left no temp file.
    let names: Vec<String> = snapshot(dir).into_keys().collect();
    assert_eq!(names, vec![".acme.toml.tmp.999.0", ".x.tmp", "acme.toml"]);
}

#[test]
fn prefixes_from_cli_accept_bare_addresses_and_spacing() {
    let (n, notice) = parse_cli_prefix(" 2001:db8::25 ", false).unwrap();
    assert_eq!(n, net("2001:db8::25/128"));
    assert!(notice.is_none());
    let (n, notice) = parse_cli_prefix("2001:DB8::/32", false).unwrap();
    assert_eq!(n, net("2001:db8::/32"));
    assert!(notice.is_none());
    assert!(parse_cli_prefix("2001:db8::/-1", false).is_err());
    assert!(parse_cli_prefix("", false).is_err());
}

#[test]
fn names() {
    for ok in ["a", "A9", "example-isp", "x.y_z-1", "0"] {
        validate_name(ok).unwrap();
    }
    for bad in [
        "",
        ".a",
        "_a",
        "-a",
        "a b",
        "a/b",
        "ä",
        "a\n",
        &"a".repeat(65),
    ] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn spf_domains_are_stored_normalized_and_owned_by_one_partner() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Store::empty(dir.path());
    st.add_with_spf("g", &[], &s(&["Google.COM."]), None, None, false)
        .unwrap();
    assert_eq!(st.partners["g"].spf, ["google.com"]);
    st.save("g").unwrap();
    let back = Store::load(dir.path()).unwrap();
    assert_eq!(back.partners["g"].spf, ["google.com"]);
    assert!(back.partners["g"].prefixes.is_empty());
    let text = std::fs::read_to_string(dir.path().join("g.toml")).unwrap();
    assert!(
        text.contains("spf = [\"google.com\"]") && !text.contains("prefixes"),
        "{text}"
    );
    // Another partner may not name it; nothing changes.
    let before = st.clone();
    let e = st
        .add_with_spf(
            "h",
            &s(&["2001:db8::/32"]),
            &s(&["google.com"]),
            None,
            None,
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("already named by partner \"g\""), "{e}");
    assert_eq!(st, before);
    // Removing the last domain of a partner without prefixes removes it.
    assert!(st
        .remove_items("g", &[], &s(&["other.com"]))
        .unwrap_err()
        .to_string()
        .contains("names no spf domain other.com"));
    st.remove_items("g", &[], &s(&["google.com"])).unwrap();
    assert!(!st.partners.contains_key("g"));
}
