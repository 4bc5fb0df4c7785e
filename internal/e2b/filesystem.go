package e2b

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

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

// Directory watches poll: the orchestrator has no file events, so a watch
// lists the directory (recursively if asked) every watchPoll and reports
// the differences. Renames show as a remove and a create; changes that
// come and go between two polls are not seen.
const (
	watchPoll       = 300 * time.Millisecond
	maxWatchEntries = 10_000
)

// snapshot is a watched tree: relative name to what a listing said.
type snapshot map[string]provider.FileInfo

func (f fsService) snapshot(ctx context.Context, id, root string, recursive bool) (snapshot, error) {
	snap := snapshot{}
	var walk func(dir string) error
	walk = func(dir string) error {
		infos, err := f.s.m.ListFiles(ctx, id, dir)
		if err != nil {
			return err
		}
		for _, fi := range infos {
			if len(snap) >= maxWatchEntries {
				return connect.NewError(connect.CodeResourceExhausted,
					fmt.Errorf("more than %d entries to watch: watch a smaller tree", maxWatchEntries))
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(fi.Path, strings.TrimSuffix(root, "/")), "/")
			snap[rel] = fi
			if recursive && fi.IsDir && fi.Mode&fs.ModeSymlink == 0 {
				if err := walk(fi.Path); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return snap, walk(root)
}

// diff lists what changed from old to cur, by name.
func diff(old, cur snapshot, withEntry bool) []*filesystem.FilesystemEvent {
	var out []*filesystem.FilesystemEvent
	add := func(name string, t filesystem.EventType, fi *provider.FileInfo) {
		ev := &filesystem.FilesystemEvent{Name: name, Type: t}
		if withEntry && fi != nil {
			ev.Entry = entry(*fi)
		}
		out = append(out, ev)
	}
	for name, fi := range cur {
		was, ok := old[name]
		switch {
		case !ok:
			add(name, filesystem.EventType_EVENT_TYPE_CREATE, &fi)
		case was.Size != fi.Size || !was.ModTime.Equal(fi.ModTime):
			add(name, filesystem.EventType_EVENT_TYPE_WRITE, &fi)
		case was.Mode != fi.Mode:
			add(name, filesystem.EventType_EVENT_TYPE_CHMOD, &fi)
		}
	}
	for name := range old {
		if _, ok := cur[name]; !ok {
			add(name, filesystem.EventType_EVENT_TYPE_REMOVE, nil)
		}
	}
	slices.SortFunc(out, func(a, b *filesystem.FilesystemEvent) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (f fsService) watchRoot(ctx context.Context, id, root string) error {
	fi, err := f.s.m.StatFile(ctx, id, root)
	if err != nil {
		return f.s.rpcError(err)
	}
	if !fi.IsDir {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path %s is not a directory", root))
	}
	return nil
}

func (f fsService) WatchDir(ctx context.Context, req *connect.Request[filesystem.WatchDirRequest], stream *connect.ServerStream[filesystem.WatchDirResponse]) error {
	id, m := sandboxFrom(ctx), req.Msg
	if err := f.watchRoot(ctx, id, m.GetPath()); err != nil {
		return err
	}
	last, err := f.snapshot(ctx, id, m.GetPath(), m.GetRecursive())
	if err != nil {
		return f.s.rpcError(err)
	}
	if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Start{Start: &filesystem.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	poll := time.NewTicker(watchPoll)
	defer poll.Stop()
	keep := time.NewTicker(keepAliveEvery(req.Header()))
	defer keep.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-keep.C:
			if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Keepalive{Keepalive: &filesystem.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case <-poll.C:
			cur, err := f.snapshot(ctx, id, m.GetPath(), m.GetRecursive())
			if err != nil {
				return f.s.rpcError(err)
			}
			for _, ev := range diff(last, cur, m.GetIncludeEntry()) {
				if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Filesystem{Filesystem: ev}}); err != nil {
					return err
				}
			}
			last = cur
		}
	}
}

// A watcher is the non-streaming watch: each GetWatcherEvents reports what
// changed since the previous one.
type watcher struct {
	sandbox, root      string
	recursive, entries bool
	last               snapshot
}

// maxWatchers bounds the watchers a server keeps, so that clients that
// never remove theirs cannot grow it without end.
const maxWatchers = 1000

func (f fsService) CreateWatcher(ctx context.Context, req *connect.Request[filesystem.CreateWatcherRequest]) (*connect.Response[filesystem.CreateWatcherResponse], error) {
	id, m := sandboxFrom(ctx), req.Msg
	if err := f.watchRoot(ctx, id, m.GetPath()); err != nil {
		return nil, err
	}
	snap, err := f.snapshot(ctx, id, m.GetPath(), m.GetRecursive())
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	wid := hex.EncodeToString(rnd[:])
	f.s.watchMu.Lock()
	defer f.s.watchMu.Unlock()
	if len(f.s.watchers) >= maxWatchers {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the server keeps at most %d watchers: remove some", maxWatchers))
	}
	f.s.watchers[wid] = &watcher{sandbox: id, root: m.GetPath(), recursive: m.GetRecursive(), entries: m.GetIncludeEntry(), last: snap}
	return connect.NewResponse(&filesystem.CreateWatcherResponse{WatcherId: wid}), nil
}

func (f fsService) watcher(ctx context.Context, wid string) (*watcher, error) {
	f.s.watchMu.Lock()
	defer f.s.watchMu.Unlock()
	w, ok := f.s.watchers[wid]
	if !ok || w.sandbox != sandboxFrom(ctx) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found", wid))
	}
	return w, nil
}

func (f fsService) GetWatcherEvents(ctx context.Context, req *connect.Request[filesystem.GetWatcherEventsRequest]) (*connect.Response[filesystem.GetWatcherEventsResponse], error) {
	w, err := f.watcher(ctx, req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	cur, err := f.snapshot(ctx, w.sandbox, w.root, w.recursive)
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	f.s.watchMu.Lock()
	events := diff(w.last, cur, w.entries)
	w.last = cur
	f.s.watchMu.Unlock()
	return connect.NewResponse(&filesystem.GetWatcherEventsResponse{Events: events}), nil
}

func (f fsService) RemoveWatcher(ctx context.Context, req *connect.Request[filesystem.RemoveWatcherRequest]) (*connect.Response[filesystem.RemoveWatcherResponse], error) {
	if _, err := f.watcher(ctx, req.Msg.GetWatcherId()); err != nil {
		return nil, err
	}
	f.s.watchMu.Lock()
	delete(f.s.watchers, req.Msg.GetWatcherId())
	f.s.watchMu.Unlock()
	return connect.NewResponse(&filesystem.RemoveWatcherResponse{}), nil
}
