# A unix-socket proxy to dockerd that scripts/demo/auto-pin.sh kills to make
# the docker provider unreachable while the server keeps running.
import os, socket, sys, threading
src, dst = sys.argv[1], sys.argv[2]
if os.path.exists(src): os.unlink(src)
ls = socket.socket(socket.AF_UNIX); ls.bind(src); ls.listen(64)
def pipe(a, b):
    try:
        while (d := a.recv(65536)): b.sendall(d)
    except OSError: pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
while True:
    c, _ = ls.accept(); u = socket.socket(socket.AF_UNIX); u.connect(dst)
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
