//! What the responder suites share: a responder on an ephemeral port of
//! [::1], its two stock configs and greetings, and a bounded wait.
#![allow(dead_code)] // each suite uses its own part

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use mx6gate::responder::{bind_listener, GreetingMode, Responder, ResponderConfig, ResponderStats};
use tokio::{sync::oneshot, task::JoinHandle};

pub const HOST: &str = "mx.example.test";
/// Longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(5);
pub const CLOSE_GREETING: &str =
    "421 4.7.0 mx.example.test: IPv6 SMTP from ::1 is not accepted here yet; please retry over IPv4\r\n";
pub const CONVERSE_GREETING: &str =
    "450 4.7.0 mx.example.test: IPv6 SMTP from ::1 is not accepted here yet; please retry over IPv4\r\n";

pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<ResponderStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(cfg: ResponderConfig) -> Server {
        let cfg = ResponderConfig {
            listen: "[::1]:0".parse().unwrap(),
            ..cfg
        };
        let listener = bind_listener(&cfg).unwrap();
        let addr = listener.local_addr().unwrap();
        let responder = Responder::new(cfg);
        let stats = responder.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            responder
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        Server {
            addr,
            stats,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returns promptly after shutdown")
            .unwrap()
            .unwrap();
    }
}

pub fn close_cfg() -> ResponderConfig {
    ResponderConfig {
        hostname: HOST.to_string(),
        ..ResponderConfig::default()
    }
}

pub fn converse_cfg() -> ResponderConfig {
    ResponderConfig {
        hostname: HOST.to_string(),
        code: 450,
        greeting: GreetingMode::Converse,
        ..ResponderConfig::default()
    }
}

pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
