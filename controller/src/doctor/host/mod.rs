//! The checks `doctor` runs on this host, in the network namespace it is
//! started in (the gateway's). Every failure to look is itself a finding:
//! doctor never stops half way.
use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use mx6gate_common::{Counter, Mode};

use super::{Finding, Severity};
use crate::{
    context::Ctx,
    gate::{AttachRecord, Gate, PinLayout},
    iface, kernel,
    maps::GateMaps,
    observe::attachments,
    store::{today_utc, RefusedKind, Store, StoreRefused},
};

mod ipv4;
mod kernel_check;
mod listeners;
mod partners;
mod pins;
mod proc_net;
mod responder;

pub use self::proc_net::{parse_proc_listeners, Listener};
use self::{ipv4::*, kernel_check::*, listeners::*, partners::*, pins::*, responder::*};

/// The end of a long message (verifier logs end with the reason).
fn tail(s: &str, max: usize) -> String {
    match s.char_indices().rev().nth(max) {
        Some((i, _)) => format!("…{}", &s[i..]),
        None => s.to_string(),
    }
}

/// Partners whose `expires` falls within this many days get a warning.
pub const EXPIRY_WARN_DAYS: i64 = 14;

pub fn run_all(ctx: &Ctx, mode: Mode, daemon: Option<i32>) -> Vec<Finding> {
    let mut out = kernel(ctx);
    let maps = gate(ctx, daemon, &mut out);
    responder(ctx, mode, daemon, maps.as_ref(), &mut out);
    listeners(&ctx.cfg.ports, &mut out);
    let interfaces = protected_interfaces(ctx);
    ipv4(&interfaces, mode != Mode::Monitor, &mut out);
    partners(ctx, maps.as_ref(), &mut out);
    out
}

/// The configured interfaces and any the gate is attached to, by name.
fn protected_interfaces(ctx: &Ctx) -> Vec<String> {
    let layout = PinLayout::new(&ctx.cfg.pin_path);
    let mut names: Vec<String> = attachments(&layout, &ctx.state.path, &ctx.cfg.interfaces)
        .into_iter()
        .map(|a| a.interface)
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests;
