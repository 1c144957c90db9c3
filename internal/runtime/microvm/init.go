package microvm

// initScript is the initramfs's /init, run by busybox sh as PID 1. It leaves PID 1 to envd
// (switch_root execs it), which reaps orphans itself; see the package doc for why.
//
// Any failure exits PID 1: the kernel panics, reboots because of panic=-1, and the VMM, run
// with -no-reboot (or Firecracker's reboot=k), exits, so the driver sees a dead VM at once and
// reports the console log, which carries the "hearth-init:" line naming the failed step.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
echo "hearth-init: up"
fail() { echo "hearth-init: $*"; sleep 1; exit 1; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || fail "mount proc/sys/dev"
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m" || fail "insmod $m"; done
ip="" gw="" dns="" host=sandbox envd=/usr/bin/envd
for a in $(cat /proc/cmdline); do
	case "$a" in
	hearth.ip=*) ip="${a#*=}" ;;
	hearth.gw=*) gw="${a#*=}" ;;
	hearth.dns=*) dns="${a#*=}" ;;
	hearth.hostname=*) host="${a#*=}" ;;
	esac
done
waitfor() { i=0; while [ ! -e "$1" ]; do i=$((i+1)); [ $i -gt 1000 ] && fail "$1 did not appear"; usleep 10000; done; }
waitfor /dev/vda
mount -t ext4 -o noatime /dev/vda /newroot || fail "mount root disk /dev/vda"
[ -x "/newroot$envd" ] || fail "no $envd in the root filesystem"
waitfor /sys/class/net/eth0
ip link set lo up || fail "lo up"
if [ -n "$ip" ]; then
	ip addr add "$ip" dev eth0 && ip link set eth0 up && ip route add default via "$gw" || fail "configure eth0 $ip via $gw"
fi
hostname "$host"
echo "$host" > /newroot/etc/hostname
grep -qw "$host" /newroot/etc/hosts 2>/dev/null || echo "127.0.1.1 $host" >> /newroot/etc/hosts
if [ -n "$dns" ]; then
	rm -f /newroot/etc/resolv.conf
	for d in $(echo "$dns" | tr , ' '); do echo "nameserver $d"; done > /newroot/etc/resolv.conf
fi
mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/tmp
mount --move /proc /newroot/proc && mount --move /sys /newroot/sys && mount --move /dev /newroot/dev || fail "move mounts"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts || fail "mount devpts"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm /newroot/dev/shm || fail "mount /dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /newroot/tmp || fail "mount /tmp"
echo "hearth-init: starting envd"
exec switch_root /newroot "$envd" --addr 0.0.0.0:49983 --reap --port-forward --set-clock
`

// InitUpMarker is the line the guest init prints on the console first: a VMM that printed it
// has booted the kernel and run userspace (used to probe whether an accelerator works).
const InitUpMarker = "hearth-init: up"
