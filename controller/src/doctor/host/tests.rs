use super::*;

#[test]
fn proc_net_tcp_listeners() {
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:0019 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0\n";
    let l = parse_proc_listeners(tcp, false);
    assert_eq!(
        l,
        vec![
            Listener {
                addr: "0.0.0.0".parse().unwrap(),
                port: 25
            },
            Listener {
                addr: "127.0.0.1".parse().unwrap(),
                port: 3306
            },
        ]
    );
    let tcp6 =
        "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:0019 00000000000000000000000000000000:0000 0A 0\n\
   1: 00000000000000000000000001000000:28D5 00000000000000000000000000000000:0000 0A 0\n\
   2: B80D0120000000000000000001000000:0019 00000000000000000000000000000000:0000 0A 0\n";
    let l = parse_proc_listeners(tcp6, true);
    assert_eq!(
        l[0],
        Listener {
            addr: "::".parse().unwrap(),
            port: 25
        }
    );
    assert_eq!(
        l[1],
        Listener {
            addr: "::1".parse().unwrap(),
            port: 10453
        }
    );
    assert_eq!(
        l[2],
        Listener {
            addr: "2001:db8::1".parse().unwrap(),
            port: 25
        }
    );
}

#[test]
fn own_listener_is_seen() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    assert!(parse_proc_listeners(&text, false)
        .iter()
        .any(|x| x.port == port));
}

/// A kernel below the floor (Ubuntu 20.04's 5.4 lacks these three; no
/// such kernel boots in the matrix, so the wording is held here).
#[test]
fn kernel_below_the_floor_in_plain_words() {
    let mut reqs = kernel::requirements_with(|what| match what {
        "XDP programs" => kernel::Probe::Yes,
        _ => kernel::Probe::No,
    });
    // A ring buffer probe that could not run is not held against it.
    reqs[2].present = kernel::Probe::Unknown("EPERM".into());
    let f = kernel_finding("5.4.0-150-generic", &reqs);
    assert_eq!(f.severity, Severity::Fail);
    assert_eq!(
        f.summary,
        "Linux 5.4.0-150-generic is too old for the gate: it lacks sk_lookup programs, \
         BPF links for XDP and sk_lookup, and updating them in place"
    );
    assert!(
        f.detail.contains("sk_lookup programs (in Linux since 5.9;"),
        "{}",
        f.detail
    );
    assert!(f.detail.contains("nothing is gated"), "{}", f.detail);
    assert!(!f.detail.contains("ring buffers"), "{}", f.detail);
    let fix = f.fix.unwrap();
    assert!(
        fix.contains("Linux 5.10 or later") && fix.contains("Debian 11"),
        "{fix}"
    );

    let unknown = kernel::requirements_with(|_| kernel::Probe::Unknown("EPERM".into()));
    let f = kernel_finding("6.1.0", &unknown);
    assert_eq!(f.severity, Severity::Warn);
    assert_eq!(f.fix.as_deref(), Some("run doctor as root"));

    let fine = kernel::requirements_with(|_| kernel::Probe::Yes);
    assert_eq!(kernel_finding("6.1.0", &fine).severity, Severity::Ok);
}
