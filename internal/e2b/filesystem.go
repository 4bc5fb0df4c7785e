package e2b

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stacyvm/stacyvm/internal/e2b/gen/filesystem"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

type fsService struct{ s *server }

func entry(fi provider.FileInfo) *filesystem.EntryInfo {
	t := filesystem.FileType_FILE_TYPE_FILE
	switch {
	case fi.IsDir:
		t = filesystem.FileType_FILE_TYPE_DIRECTORY
	case fi.Mode&fs.ModeSymlink != 0:
		t = filesystem.FileType_FILE_TYPE_SYMLINK
	}
	e := &filesystem.EntryInfo{
		Name:        path.Base(fi.Path),
		Type:        t,
		Path:        fi.Path,
		Size:        fi.Size,
		Mode:        uint32(fi.Mode.Perm()),
		Permissions: fi.Mode.String(),
	}
	if !fi.ModTime.IsZero() {
		e.ModifiedTime = timestamppb.New(fi.ModTime)
	}
	return e
}

func (f fsService) Stat(ctx context.Context, req *connect.Request[filesystem.StatRequest]) (*connect.Response[filesystem.StatResponse], error) {
	fi, err := f.s.m.StatFile(ctx, sandboxFrom(ctx), req.Msg.GetPath())
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.StatResponse{Entry: entry(fi)}), nil
}

// MakeDir creates a directory and its parents. The orchestrator has no
// directory call, but its file writes create parents: MakeDir writes an
// empty placeholder inside the new directory and removes it, with file
// operations only, so it means the same on every provider. An existing
// path is AlreadyExists, which the SDK reads as false.
func (f fsService) MakeDir(ctx context.Context, req *connect.Request[filesystem.MakeDirRequest]) (*connect.Response[filesystem.MakeDirResponse], error) {
	id, p := sandboxFrom(ctx), req.Msg.GetPath()
	if p == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("path is required"))
	}
	if _, err := f.s.m.StatFile(ctx, id, p); err == nil {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("path %s already exists", p))
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, f.s.rpcError(err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	placeholder := path.Join(p, ".stacyvm-mkdir-"+hex.EncodeToString(rnd[:]))
	if err := f.s.m.WriteFile(ctx, id, placeholder, strings.NewReader(""), 0o600); err != nil {
		return nil, f.s.rpcError(err)
	}
	if err := f.s.m.DeleteFile(context.WithoutCancel(ctx), id, placeholder, false); err != nil {
		return nil, f.s.rpcError(err)
	}
	fi, err := f.s.m.StatFile(ctx, id, p)
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.MakeDirResponse{Entry: entry(fi)}), nil
}

func (f fsService) Move(ctx context.Context, req *connect.Request[filesystem.MoveRequest]) (*connect.Response[filesystem.MoveResponse], error) {
	id := sandboxFrom(ctx)
	if err := f.s.m.MoveFile(ctx, id, req.Msg.GetSource(), req.Msg.GetDestination()); err != nil {
		return nil, f.s.rpcError(err)
	}
	fi, err := f.s.m.StatFile(ctx, id, req.Msg.GetDestination())
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.MoveResponse{Entry: entry(fi)}), nil
}

// maxListEntries bounds a deep listing, so that depth 100 on / cannot
// walk a whole image into one reply.
const maxListEntries = 100_000

// ListDir lists a directory and, down to depth levels, its
// subdirectories (depth 0 means 1, as in envd).
func (f fsService) ListDir(ctx context.Context, req *connect.Request[filesystem.ListDirRequest]) (*connect.Response[filesystem.ListDirResponse], error) {
	id := sandboxFrom(ctx)
	depth := max(int(req.Msg.GetDepth()), 1)
	root := req.Msg.GetPath()
	if fi, err := f.s.m.StatFile(ctx, id, root); err != nil {
		return nil, f.s.rpcError(err)
	} else if !fi.IsDir {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path %s is not a directory", root))
	}
	out := &filesystem.ListDirResponse{}
	var walk func(dir string, level int) error
	walk = func(dir string, level int) error {
		infos, err := f.s.m.ListFiles(ctx, id, dir)
		if err != nil {
			return err
		}
		for _, fi := range infos {
			if len(out.Entries) >= maxListEntries {
				return errdefs.New(errdefs.ErrInvalidArgument, "more than %d entries: list with a smaller depth", maxListEntries)
			}
			out.Entries = append(out.Entries, entry(fi))
			if fi.IsDir && level < depth {
				if err := walk(fi.Path, level+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root, 1); err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(out), nil
}

func (f fsService) Remove(ctx context.Context, req *connect.Request[filesystem.RemoveRequest]) (*connect.Response[filesystem.RemoveResponse], error) {
	if err := f.s.m.DeleteFile(ctx, sandboxFrom(ctx), req.Msg.GetPath(), true); err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.RemoveResponse{}), nil
}

var errNoWatch = errors.New("watching directories is not supported by StacyVM's E2B facade: the orchestrator has no file events")

func (f fsService) WatchDir(ctx context.Context, req *connect.Request[filesystem.WatchDirRequest], stream *connect.ServerStream[filesystem.WatchDirResponse]) error {
	return connect.NewError(connect.CodeUnimplemented, errNoWatch)
}

func (f fsService) CreateWatcher(ctx context.Context, req *connect.Request[filesystem.CreateWatcherRequest]) (*connect.Response[filesystem.CreateWatcherResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNoWatch)
}

func (f fsService) GetWatcherEvents(ctx context.Context, req *connect.Request[filesystem.GetWatcherEventsRequest]) (*connect.Response[filesystem.GetWatcherEventsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNoWatch)
}

func (f fsService) RemoveWatcher(ctx context.Context, req *connect.Request[filesystem.RemoveWatcherRequest]) (*connect.Response[filesystem.RemoveWatcherResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errNoWatch)
}
