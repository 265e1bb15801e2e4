#!/bin/busybox sh
# PID 1 of the kernel-matrix guest (`cargo xtask test --kernel`), run by the
# initramfs's static busybox. It mounts the host's root read-only under a
# tmpfs overlay (the guest may write anywhere; nothing reaches the host),
# the job share (read-write: the job's script in, its results out), makes
# that root the root of the mount namespace, runs the job's script in it,
# and powers off.
#
# PID 1 never exits (the kernel would panic) and, once the job is done,
# runs only what is in the initramfs: the shared root may already be gone.
# It stays rooted in the initramfs throughout: the overlay is moved over
# "/" (as switch_root does) and only the job is chrooted into it. A plain
# chroot would not do: setns(2) into a mount namespace (nsenter -m, which
# the systemd suite uses) puts a process at the namespace's root mount.
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "guest-init: $*" > /dev/console; }
halt() {
    sync
    echo o > /proc/sysrq-trigger
    while :; do sleep 60; done
}

while read -r m; do
    insmod "/modules/$m" || say "insmod $m failed"
done < /modules/order

mkdir -p /lower /rw /root /job
# 9p: msize as large as 5.10's virtio transport takes.
p9="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$p9,ro" hostroot /lower || { say "cannot mount the host's root"; halt; }
mount -t 9p -o "$p9" job /job || { say "cannot mount the job share"; halt; }
. /job/guest.conf
# The overlay's upper half: the suites' writes (/tmp, /var, a package
# install) stay in guest memory.
mount -t tmpfs -o mode=0755,size=75% tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /root \
    || { say "cannot mount the overlay"; halt; }

mount -t proc proc /root/proc
mount -t sysfs sysfs /root/sys
mount -t devtmpfs devtmpfs /root/dev
mkdir -p /root/dev/pts /root/dev/shm
mount -t devpts devpts /root/dev/pts
mount -t tmpfs tmpfs /root/dev/shm
mount -t tmpfs -o mode=0755 tmpfs /root/run
# /tmp stays the overlay's (the host's, read-only, under the guest's
# writes): the checkout and its build may live there (CI's clone can).
mount -t bpf bpf /root/sys/fs/bpf
mount -t cgroup2 cgroup2 /root/sys/fs/cgroup
mount -t debugfs debugfs /root/sys/kernel/debug 2>/dev/null
mkdir -p /root/mx6gate-job
mount --bind /job /root/mx6gate-job
# The guest kernel's own modules where the host's modprobe looks for them,
# and the kernel's module requests (veth, nf_tables, … on demand) sent to
# that modprobe: the kernel runs its helper in PID 1's root, this one.
mkdir -p "/root/usr/lib/modules/$KERNEL_RELEASE"
mount --bind "/root$MODULES" "/root/usr/lib/modules/$KERNEL_RELEASE"
# The helper runs in the initramfs's root, where the overlay stays
# reachable through this second view of it.
mkdir -p /root-for-modprobe
mount --rbind /root /root-for-modprobe
printf '#!/bin/sh\nexec chroot /root-for-modprobe /sbin/modprobe "$@"\n' > /bin/modprobe-in-root
chmod 755 /bin/modprobe-in-root
echo /bin/modprobe-in-root > /proc/sys/kernel/modprobe
ip link set lo up
hostname mx6gate-guest

say "root ready, running the job"
cd /root
mount --move . /
chroot . /bin/sh /mx6gate-job/run.sh < /dev/console > /dev/console 2>&1
echo "$?" > /job/exit
cd /
say "job finished, powering off"
halt
