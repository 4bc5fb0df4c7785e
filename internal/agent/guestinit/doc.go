// Package guestinit is what the agent does when it is the init of a
// microVM's guest, with no other init before or beside it: mount the
// kernel's file systems and bring up the loopback interface before
// serving (Setup), and, after the VM is restored from a snapshot, reseed
// the kernel's random state and correct its clock (Refresh). Both are
// Linux only; elsewhere they fail with errdefs.ErrUnimplemented.
//
// Nothing here may run in a container or on a shared host: it changes the
// state of the whole kernel it runs on. cmd/stacyvm-agent decides when the
// agent manages its guest.
package guestinit
