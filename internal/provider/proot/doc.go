// Package proot is the PRoot provider: sandboxes for hosts with no root,
// no KVM and no Docker. PRoot gives each sandbox its own root file system
// by rewriting the paths of system calls with ptrace.
//
// PRoot is NOT a security boundary against a determined attacker. Code in a
// sandbox can reach host files through system calls PRoot 5.1 does not
// know (openat2 is one; measured: it reads any file the sandbox's user can
// read), sees the host's processes in /proc, shares the host's network, and
// has no memory, CPU or process limits. Use it for code you would run as
// that user anyway. When the server runs as root each sandbox runs as its
// own unprivileged uid (Options.UIDBase + slot), which bounds what an
// escape can do; otherwise sandboxes run as the server's own user. What
// this package does guarantee is that no request — no file operation, no
// path, no link that sandbox code plants — makes the server itself touch a
// host file outside the sandbox.
//
// # Design
//
// An image is a root file system directory under Options.ImagesDir (see
// ImageDir for the names). Spawn copies it into the sandbox's own
// directory under Options.StateDir, owned by the sandbox's user, so each
// sandbox may write anywhere in its "/" (/workspace, /tmp, /etc, /usr...)
// while no other sandbox sees it and the image is never modified. A copy
// was chosen over sharing the image read-only with private writable
// directories bound over it: it needs no root to protect the image (a
// server that is not root owns the image, so permissions could not stop a
// sandbox from changing it), and sandboxes behave like ordinary machines
// (package managers work). It costs disk (the image's size per sandbox,
// nothing where the file system clones extents: btrfs, XFS) and spawn time
// (measured on ext4 here: 0.1 s for busybox; 0.35 to 7 s for a 170 MB
// Debian with python3, depending on how fragmented the target directory's
// block groups are).
//
// Commands run as "proot ... /bin/sh -c RUNNER": one PRoot process per
// command, started from the server (see Exec for why not one agent under
// PRoot: PRoot 5.1 corrupts processes a multi-threaded program forks
// concurrently, and Go's os/exec is such a program). Background processes
// a command leaves keep running under its PRoot, inside the sandbox, until
// Destroy. A timeout or a cancelled request kills the command's whole
// process tree: every process its PRoot traces, whatever its process group
// or session.
//
// File operations are served by the agent (cmd/stacyvm-agent), started as
// the sandbox's user on the host, outside PRoot, with the sandbox's root
// file system as its root: every path is resolved with os.Root, with
// symbolic links interpreted inside the sandbox, and files with several
// hard links are refused (the copy has none; only sandbox code makes
// them). This does not depend on PRoot's path translation, which sandbox
// code can bypass. Views differ in one way: file operations see the root
// file system, not the host's /proc, /sys and /dev that commands see.
//
// Everything needed to find a sandbox again lives in its directory
// (state.json: the request, the slot and uid, the file agent's PID and
// start time), so a new provider instance re-attaches to live sandboxes
// and removes dead ones (Inventory, adoption after a restart). Processes
// are recognised by PID and kernel start time, never PID alone, and PRoot
// processes by their command line and as tracers of the sandbox's
// processes. Destroy stops every PRoot of the sandbox first: a tracee
// whose tracer dies runs on with no path translation at all.
package proot
