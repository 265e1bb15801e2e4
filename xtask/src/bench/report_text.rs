//! The prose of RESULTS.md: how each part measures and how to read it.
//! (The verdicts and the figures are computed; this text is not.)

pub const TABLES: &str = "\
How to read the tables:

* `median (min–max)`: the median of the repeated runs and their spread.
* `×floor`, `×xdp-filter`, `×trie`, `×nftables`: the row's median divided by
  that baseline's median *measured in the same run* (below 1 = cheaper than
  the baseline); `−floor ns`: the difference to the floor.
* The **floor** is a two-instruction program, `return XDP_DROP`, run on the
  same frame: what BPF_PROG_TEST_RUN costs before any program logic.
* **xdp-filter** is Debian's xdp-tools `xdpfilt_dny_ip.o` (what `xdp-filter
  load -p deny -f ipv6` loads: allow mode, exact IPv6 addresses) loaded from
  its own object, its address map holding one address per partner prefix
  (the prefix's `…::25`, which is also the partner source the bench sends
  from). It can express \"SYN from a partner passes, from a stranger is
  dropped\"; it cannot express the other classes (in allow mode it drops
  IPv4, neighbour discovery and every packet of a stranger): its figures
  there are marked ‡ and do not enter the comparison.
* **plain trie** is the gate the issue warns about: one kernel LPM trie
  holding the same prefixes, looked up by a minimal raw-instruction program
  (Ethernet/IPv6/TCP SYN to 25, no VLAN tags, no extension headers, no
  counters) — a lower bound for a trie-only gate.
* † marks a figure measured one run per call (see part 1).";

pub fn per_packet(repeat: u32, calls: usize, cold: usize, restored: Option<bool>) -> String {
    let restore = match restored {
        Some(false) => {
            "The kernel does **not** restore the input frame between the repetitions \
            of one call (checked at start-up: 100 reset-mode repetitions of one SYN moved the \
            gate's reset counter by 1, not 100 — the first run turns the SYN into a RST in \
            place and the other 99 time a non-SYN). So the reset-mode class (†) is timed one \
            run per call instead: the kernel's own timing of a single run, averaged over \
            {calls} calls, each starting from a fresh copy of the SYN; its floor is the \
            XDP_DROP program timed the same way (a single timed run carries ~60–70 ns of \
            timer overhead that a long repeat amortises away, so compare † rows only with \
            their own floor)."
        }
        Some(true) => {
            "The kernel restores the input frame between repetitions (checked at \
            start-up), so every class, reset mode included, is timed with repeats."
        }
        None => "",
    }
    .replace("{calls}", &calls.to_string());
    format!(
        "Every program is run by BPF_PROG_TEST_RUN (bpf(2) command 10) on the same frames, \
         through one raw `bpf()` helper for all of them; the figure is the kernel's own mean \
         time per repetition.

* **Hot**: one frame, {repeat} repetitions per call: the same source every run, so \
  the lookup's cache lines stay hot. The hot partner is the `…::25` of a /48 \
  partner prefix (the most common length), the hot near stranger the sibling \
  of one, so the hot rows at different sizes describe the same lookup.
* **Cold**: a test run repeats one frame, so a small driver program (raw \
  instructions) runs first on every repetition: it writes the next of {cold} \
  sources into the frame's IPv6 source — sources spread over the whole table \
  (partners: one `…::25` of as many prefixes picked at random; far strangers: \
  random addresses in 2000::/3; near strangers: the sibling of a random partner \
  prefix, so they share a /32 with it) — and tail-calls the program under test; \
  {repeat} repetitions per call. The program's code stays hot while the table's \
  lines do not (at 1M prefixes the table is several times the 32 MiB L3). The \
  floor is measured through the same driver, so the driver's own few \
  nanoseconds cancel in the ratios.
* {restore}
* Before measuring, every program's verdict is checked on the hot frame and on \
  the first 64 cold sources (the gate against the class's expected action in \
  its mode, xdp-filter and the plain trie against pass/drop): figures from a \
  table that did not load as meant are never reported.
* Runs are interleaved (run 1 of every class and program, then run 2, …), so \
  drift and the machine's other load hit all programs alike.
* The allowlist: N random prefixes (SplitMix64, fixed seed) inside 2000::/3, \
  lengths /32 5%, /36 3%, /40 7%, /44 10%, /48 30%, /52 5%, /56 15%, /60 5%, \
  /64 15%, /128 5%, non-overlapping, plus two partner prefixes inside \
  2001:db8::/32 for the wire test (never used as per-packet sources); part \
  3's changes are undone before this part, so it is that initial set. Loaded \
  into the gate only through the product's own API (`Gate::load`, \
  `reconcile::apply_allow_tracked` / `reconcile::apply_allow`), so whatever layout the \
  product uses is what is measured."
    )
}

pub fn wire(runs: usize, secs: f64) -> String {
    format!(
        "A sender and a gateway namespace joined by a veth pair (documentation \
addresses only). The SYN flood comes from a raw-instruction XDP program run \
through BPF_PROG_TEST_RUN in live-frames mode on CPU 0, in the sender's \
namespace: it gives every SYN a random source in 2001:db8:ffff::/48 — a \
random /64 and host part per packet, in a /32 that also holds two partner \
prefixes (2001:db8:1::/48, 2001:db8:2:5::/64), so the gate cannot stop at its \
first level and probes its second level with a different /64 every packet — \
and `bpf_redirect`s it into the sender's veth. The gateway's veth \
runs threaded NAPI with its kthread pinned to CPU 1 at SCHED_FIFO, so all of \
the gateway's work on these packets happens in that one thread; dropping is \
done by each dropper in turn on the gateway's veth: a bare XDP_DROP, mx6gate's \
XDP program (drop mode, the allowlist as in part 1), xdp-filter (as in part \
1), or no XDP and an nftables netdev-ingress chain `ip6 saddr != @partners tcp \
dport 25 tcp flags & (syn | ack) == syn counter drop` on an interval set of \
the same prefixes (part of the table part 3 loaded; GRO on so the veth runs \
NAPI without XDP). {runs} interleaved runs of {secs} s per dropper.

* **receiving core ns/packet**: the NAPI kthread's CPU time \
(`/proc/PID/schedstat`) divided by the packets dropped (`rx_queue_0_xdp_drops` \
of `ethtool -S` for the XDP droppers; for nftables the packets the veth handed \
to the stack, `rx_queue_0_xdp_packets` — every flood packet is a stranger's \
SYN the rule drops; checked against the rule's counter up to 10k prefixes, \
beyond which merely listing a counter costs nft tens of seconds). This \
is the figure compared: what one dropped SYN costs the gateway. `⇒ one-core \
capacity` is its inverse.
* **dropped Mpps (observed)**, **offered**, **lost at the ring**: what \
happened in the run. On this VM the observed rate is *not* the receiving \
core's capacity: the gateway's veth ring holds 256 frames, and its NAPI thread \
is not woken promptly enough to keep it from overflowing (the core sat idle \
for most of every run while the sender's `tx_queue_0_xdp_xmit_errors` grew), \
so the more a packet costs, the larger the share lost before the dropper ever \
saw it. Those losses cost the gateway nothing and are not counted as drops."
    )
}

pub const CONTROL: &str = "\
Times are wall clock in this process, repeated; prefixes/s is N divided by \
the median. **Gate::load**: a cold start — maps created and pinned, both \
programs through the verifier. **sync (cold)**: the product's sync as every \
command and the daemon run it (`mx6gate::reconcile::apply_allow_tracked`, with a \
fresh state directory: no snapshot yet, so the full apply, then the snapshot \
written) of all N prefixes into those empty maps; **cold start** is the two, \
run by run, and what prefixes/s and the comparison with nftables use. **1% \
change**: N/100 prefixes removed and as many new ones added; **sync**: one \
`apply_allow_tracked` on the loaded gate (a diff against the state \
directory's snapshot of the last update), five successive changes; **full \
read-back**: the same five changes undone, newest first, each with \
`reconcile::apply_allow`, which reads the maps back whole and diffs against them \
(what a sync falls back to after a crash or when the snapshot does not \
describe the maps); the gate then holds the initial set again. **nft -f**: the same set into an \
nftables interval set (`table netdev … { set partners { type ipv6_addr; flags \
interval; elements = { … } } }`) in a namespace of the bench's own, the table \
deleted between runs (not timed); the 1% change is one `nft -f` file with a \
`delete element` and an `add element`, stopped after 20 s (5 s with \
--quick) and then not tried again at that size (the changes that went in are \
then undone, untimed, so the set is the initial one again, like the gate's): nft 1.0.6 spends time \
proportional to the set's size on every element it deletes from an interval \
set (found here: 200 deletions from a 20k-element set took 5 s), so from 100k \
prefixes on a 1% change does not finish in any useful time, and the practical \
way to change such a set is to reload it whole, which costs what the cold \
`nft -f` column shows. **plain trie fill**: the same prefixes \
into one kernel LPM trie with BPF_MAP_UPDATE_BATCH (or one update per prefix \
where the kernel has no batch for tries), for scale.";

pub const MEMORY: &str = "\
Kernel memory of every map the gate pinned (`memlock:` in \
`/proc/self/fdinfo/<fd>` of each pinned map, i.e. what the kernel charges for \
it), after part 3. The plain trie and xdp-filter's maps likewise. The \
nftables set has no per-object accounting: its figure is the growth of the \
host's Slab + Percpu + VmallocUsed across one `nft -f` load, approximate \
(other work on the machine moves it too). **Process RSS**: the controller's \
userspace side, measured in a fresh process (this binary, run again with a \
hidden `--rss-probe N`) that generates the N prefixes and holds them as a \
prefix → partner map (as the controller holds its partner store): its RSS \
then; the growth after `Gate::load` and `reconcile::apply_allow_tracked` of that set; and \
the peak (VmHWM, reset just before the load) — one measurement each.";

pub const VARIANTS: &str = "\
Where a kernel lacks a newer feature the gate does the same job another way, \
chosen when it loads (`controller/src/kernel.rs` probes, load-time constants \
select, the verifier keeps one branch). Here the same object is loaded twice \
on this kernel, with what this kernel offers and with the baseline Debian \
11's 5.10 runs (precise clock; the lo exemption by comparing the connection's \
addresses instead of reading `ingress_ifindex`), and both are run through \
BPF_PROG_TEST_RUN on the same inputs, interleaved. The sk_lookup runs have \
no interface (the kernel's test run leaves `ingress_ifindex` 0) and no \
socket to assign: steering itself is not in these figures. Median (min–max) \
ns per run.";

pub const STORE: &str = "\
The partner store as the daemon reads it (`Store::load`), N prefixes in one
partner (one file) against the same N spread over partners of 1,000 prefixes
(one file each, as `mx6gate partner add` writes them). **one ÷ spread** near 1
says the load is linear in the prefixes whatever their grouping; it was
quadratic in one partner's size before issue 10 (50k prefixes in one partner
1.1 s, over 50 partners 0.07 s; 200k in one partner 18.7 s). **per prefix ÷
smallest size's** near 1 says it stays linear as N grows. **first sync** is
a daemon start's work on a fresh gate (the store read and reconciled into
empty maps); **resync** its periodic full resync of an unchanged store (read
again, diffed against the snapshot of the maps: nothing written). The daemon
does all of it on its sync worker thread: the responder, the metrics and
signal handling never wait for it (tests/tests/field_faults.rs checks that
with 300,000 prefixes in one partner).
";
