//go:build linux

package proot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// PRoot starts every program through a small static "loader" it carries
// inside its own binary. Unless PROOT_LOADER (PROOT_LOADER_32 for 32-bit
// programs) names a copy, each proot process writes one to
// /tmp/prooted-<pid>-XXXXXX and removes it when it exits: not when it is
// killed with SIGKILL, as Destroy's fallback and a crashed server do, and
// PRoot 5.1 has no PROOT_TMP_DIR to move it. So the provider extracts the
// loaders once into its state directory and names them to every proot:
// then proot writes nothing to /tmp.

// loaderFiles are the loaders' names in the state directory.
const (
	loaderFile   = "proot-loader"
	loader32File = "proot-loader-32"
)

// compatMachine is the 32-bit machine whose programs a 64-bit PRoot runs
// with its second loader.
var compatMachine = map[elf.Machine]elf.Machine{
	elf.EM_X86_64:  elf.EM_386,
	elf.EM_AARCH64: elf.EM_ARM,
}

// extractLoaders finds the loaders embedded in the proot binary and writes
// them into dir, returning the environment that makes proot use them.
// Each file is replaced by a rename, so that running sandboxes keep the
// copy they mapped.
func extractLoaders(prootPath, dir string) ([]string, error) {
	bin, err := os.ReadFile(prootPath)
	if err != nil {
		return nil, err
	}
	outer, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prootPath, err)
	}
	loader := embeddedELF(bin, outer.ByteOrder, elf.ELFCLASS64, outer.Machine)
	if outer.Class != elf.ELFCLASS64 {
		loader = embeddedELF(bin, outer.ByteOrder, elf.ELFCLASS32, outer.Machine)
	}
	if loader == nil {
		return nil, errors.New("no loader embedded in " + prootPath)
	}
	path := filepath.Join(dir, loaderFile)
	if err := writeExecutable(path, loader); err != nil {
		return nil, err
	}
	env := []string{"PROOT_LOADER=" + path}
	if m, ok := compatMachine[outer.Machine]; ok && outer.Class == elf.ELFCLASS64 {
		if l32 := embeddedELF(bin, outer.ByteOrder, elf.ELFCLASS32, m); l32 != nil {
			path := filepath.Join(dir, loader32File)
			if err := writeExecutable(path, l32); err != nil {
				return nil, err
			}
			env = append(env, "PROOT_LOADER_32="+path)
		}
	}
	return env, nil
}

// embeddedELF returns the first whole executable of the class and machine
// that bin holds after its own header, or nil.
func embeddedELF(bin []byte, order binary.ByteOrder, class elf.Class, machine elf.Machine) []byte {
	for off := 1; ; off++ {
		i := bytes.Index(bin[off:], []byte(elf.ELFMAG))
		if i < 0 {
			return nil
		}
		off += i
		rest := bin[off:]
		f, err := elf.NewFile(bytes.NewReader(rest))
		if err != nil || f.Class != class || f.Machine != machine || f.Type != elf.ET_EXEC || f.ByteOrder != order {
			continue
		}
		// The section headers come last: they end the file.
		var end uint64
		if class == elf.ELFCLASS64 && len(rest) >= 0x40 {
			end = order.Uint64(rest[0x28:]) + uint64(order.Uint16(rest[0x3a:]))*uint64(order.Uint16(rest[0x3c:]))
		} else if class == elf.ELFCLASS32 && len(rest) >= 0x34 {
			end = uint64(order.Uint32(rest[0x20:])) + uint64(order.Uint16(rest[0x2e:]))*uint64(order.Uint16(rest[0x30:]))
		}
		if end == 0 || end > uint64(len(rest)) {
			continue
		}
		whole := true
		for _, p := range f.Progs {
			if p.Off+p.Filesz > end {
				whole = false
			}
		}
		if whole {
			return rest[:end:end]
		}
	}
}

// writeExecutable writes b to path through a temporary file and a rename,
// readable and executable by the sandboxes' users.
func writeExecutable(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, bytes.NewReader(b))
	if err == nil {
		err = tmp.Chmod(0o555)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
