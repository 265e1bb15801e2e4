#!/usr/bin/env bash
# Everything mx6gate's build, lab and tests need on Debian, idempotent.
# Used by `.ci/run` and by the README's set-up; run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# systemd (not running here: the deb_package suite boots it in its own PID
# namespace), dpkg-dev (dpkg-shlibdeps) and binutils (strip) for
# `cargo xtask deb`, util-linux for unshare/nsenter. swaks needs
# IO::Socket::INET6 for IPv6 (a Recommends that --no-install-recommends
# would leave out): libio-socket-inet6-perl. knot: the authoritative DNS
# server the SPF suites run in namespaces (tests/src/authdns.rs).
# prometheus: the server and promtool, for the shipped rules' unit tests and
# the suite that runs Prometheus in the namespace lab; lintian checks the
# package.
# The kernel matrix (`cargo xtask test --kernel`, xtask/src/vm/): qemu
# (TCG), a static busybox and cpio for the guest's initramfs, kmod's
# depmod for the unpacked kernels' modules, xz-utils and zstd for their
# compressed modules, Debian's archive keys (older releases included) for
# the private apt that fetches the kernels.
pkgs=(iproute2 ethtool postfix swaks libio-socket-inet6-perl dnsmasq-base nftables xdp-tools bpftool procps psmisc
  systemd dpkg-dev binutils util-linux knot prometheus lintian
  qemu-system-x86 busybox-static cpio kmod xz-utils zstd debian-archive-keyring)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  # Postfix must not configure or start a system instance: tests run their
  # own instances inside network namespaces.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The knot package enables a system knotd on port 53, the prometheus
  # package a system Prometheus on port 9090; the tests run their own in
  # namespaces, so switch the system ones off again (container images'
  # policy-rc.d usually kept them from starting at all).
  for svc in knot prometheus; do
    [[ " ${missing[*]} " == *" $svc "* ]] || continue
    if [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$svc.service" || true
    else
      invoke-rc.d "$svc" stop >/dev/null 2>&1 || true
      update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  done
fi

# sendmail for the real-sender suite, unpacked into a cache, never
# installed (it conflicts with postfix); also installs libwrap0 for it.
bash "$(dirname "$0")/fetch-sendmail.sh"

# The eBPF object is built with the pinned nightly's own llc (DESIGN.md);
# its rustfmt formats the workspace (nightly-only options in rustfmt.toml),
# its clippy checks the eBPF crate. The pin is ebpf/rust-toolchain.toml.
nightly=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../ebpf/rust-toolchain.toml")
[ -n "$nightly" ] || { echo "install-deps: no channel in ebpf/rust-toolchain.toml" >&2; exit 1; }
rustup toolchain list | grep -q "^$nightly" || rustup toolchain install "$nightly" --profile minimal
rustup component add rust-src llvm-tools rustfmt clippy --toolchain "$nightly"
# clippy for the workspace (`cargo xtask check`), on the default toolchain.
rustup component add clippy

# bpffs for pins (fresh VMs may not mount it).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
