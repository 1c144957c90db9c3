// Package microvm holds what the VM runtime drivers (qemu, firecracker) share: the guest
// kernel and its initramfs with the guest init, ext4 root filesystem images built from
// template directories, the guest network and kernel command line, copy-on-write file copies,
// the guest-memory reclaim step of the pause sequence, envd readiness and process reclaim.
//
// # Guest kernel and init
//
// EnsureKernel fetches Debian's cloud kernel (apt-get download + dpkg-deb -x) once per agent
// data dir and packs an initramfs around busybox-static. Debian builds the virtio drivers as
// modules, so the initramfs carries the few modules the VM needs, inserted in dependency
// order read from their .modinfo. Its /init (a short busybox script, see initScript):
// mounts proc, sys and devtmpfs; loads the modules; mounts the root disk /dev/vda; configures
// eth0, hostname and DNS from hearth.* kernel parameters (see GuestConfig.KernelArgs); mounts
// devpts, /dev/shm and a /tmp tmpfs; then switch_root's into the root filesystem and execs
// envd as PID 1. envd already reaps orphans with --reap, so no extra init process is needed,
// and if envd dies the kernel panics, the VMM exits and the sandbox is visibly dead instead of
// silently unreachable.
//
// # Root filesystems
//
// EnsureImage turns a template directory into a read-only ext4 image (mkfs.ext4 -d), once per
// template version. Each sandbox writes to its own copy-on-write layer on top of it (a qcow2
// overlay for QEMU, a reflink or sparse copy for Firecracker), so writes never reach the image
// or another sandbox.
//
// # Addressing
//
// Every VM uses the fixed address netslot.VMGuestAddr behind the slot's tap0; the slot
// namespace NATs it to the slot's guest address. A snapshot can thus be restored into any slot.
package microvm
