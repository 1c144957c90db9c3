package kvmcheck

import (
	"encoding/binary"
	"os"
	"testing"
)

// TestProbeIsCoherent runs the real check on this host and asserts the report holds
// together: every "no" carries a reason, every "yes" has passed every earlier stage, and
// what it says about the device matches the device.
func TestProbeIsCoherent(t *testing.T) {
	r := Probe()
	t.Logf("%+v", r)
	if r.Usable != (r.Reason == "") {
		t.Errorf("Usable=%v with reason %q", r.Usable, r.Reason)
	}
	if r.Usable && !(r.DeviceOK && r.CreateVM) {
		t.Error("usable without a working device and VM")
	}
	if r.CreateVM && !r.DeviceOK {
		t.Error("created a VM without a working device")
	}
	if _, err := os.Stat(Device); err != nil && r.DeviceOK {
		t.Errorf("%s missing (%v) but DeviceOK", Device, err)
	}
	_, err := os.Stat("/sys/module/kvm_pvm")
	if r.PVM != (err == nil) {
		t.Errorf("PVM=%v but /sys/module/kvm_pvm: %v", r.PVM, err)
	}
	if r.Usable && r.LoopTime > maxLoopTime {
		t.Errorf("usable although the loop took %v", r.LoopTime)
	}
}

// TestProgram pins the guest program: the loop count is where the mov reads it and the
// program ends in out + hlt, which runGuest expects in that order.
func TestProgram(t *testing.T) {
	p := program()
	if got := binary.LittleEndian.Uint32(p[2:6]); got != loopIterations {
		t.Errorf("loop count %d", got)
	}
	tail := p[len(p)-5:]
	want := []byte{0xB0, ioValue, 0xE6, ioPort, 0xF4}
	for i := range want {
		if tail[i] != want[i] {
			t.Fatalf("program tail % x, want % x", tail, want)
		}
	}
}
