package microvm

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// guestModules are the drivers a microvm guest needs, by module name. Debian's cloud kernel
// builds them as modules; their dependencies are added by moduleOrder. Modules a kernel has
// built in are simply absent and skipped.
var guestModules = []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_balloon"}

// moduleName normalises a module file name the way the kernel does ("virtio-rng" and
// "virtio_rng" are the same module).
func moduleName(file string) string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(file), ".ko"), "-", "_")
}

// indexModules maps module names to their .ko paths under root.
func indexModules(root string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			idx[moduleName(p)] = p
		}
		return nil
	})
	return idx, err
}

// moduleDepends reads the depends= field of a module's .modinfo section. The Debian package
// ships no modules.dep (depmod runs at install time), so this is where the order comes from.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// moduleOrder returns the .ko paths for want and everything they depend on, each after its
// dependencies, so insmod can load them one by one.
func moduleOrder(idx map[string]string, want []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		path, ok := idx[name]
		if !ok {
			if from != "" {
				return fmt.Errorf("module %s needs %s, which the kernel package lacks", from, name)
			}
			state[name] = 2 // built into the kernel
			return nil
		}
		state[name] = 1
		deps, err := moduleDepends(path)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(moduleName(d), name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, path)
		return nil
	}
	for _, w := range want {
		if err := visit(w, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}
