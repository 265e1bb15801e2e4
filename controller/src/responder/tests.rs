use super::*;

#[test]
fn tarpit_is_bounded_by_the_session() {
    let mut cfg = ResponderConfig {
        tarpit: Duration::from_millis(1000),
        session_timeout: Duration::from_secs(30),
        ..ResponderConfig::default()
    };
    // 100 bytes at 1 s each would be 100 s: cut to 15 s in total.
    assert_eq!(tarpit_delay(&cfg, 100), Duration::from_millis(150));
    assert_eq!(tarpit_delay(&cfg, 10), Duration::from_millis(1000));
    cfg.tarpit = Duration::ZERO;
    assert_eq!(tarpit_delay(&cfg, 100), Duration::ZERO);
}
