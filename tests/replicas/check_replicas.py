"""Read replicas behind HAProxy, under load.

A writer (`lore serve --snapshot-dir`) publishes snapshots; two read-only
replicas serve copies of one behind HAProxy, health-checked on /readyz.
While client threads search through HAProxy without pause, a document is
added to the writer, a new snapshot appears, replica 1 is killed (-9) and
restarted on the new snapshot, then replica 2 is stopped gracefully and
restarted on it. Every request must succeed, and afterwards every answer
comes from the new snapshot. A write sent to a replica gets 403 read_only.

Run by scripts/replica-checks.sh: python3 check_replicas.py LORE_BIN REPO
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

LORE, REPO = sys.argv[1], sys.argv[2]
NEW_FACT = "The zebra espresso blend ships to subscribers on Fridays only."


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, path, body=None, method=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return reply.status, parsed(reply.status, reply.headers, reply.read())
    except urllib.error.HTTPError as e:
        return e.code, parsed(e.code, e.headers, e.read())


def parsed(status, headers, raw):
    """The JSON body; a body that is not JSON fails naming what answered."""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise ValueError(f"not JSON: status {status}, content-type {headers.get('Content-Type')}, "
                         f"server {headers.get('Server')}, body {raw[:200]!r}") from None


def wait_ready(port, what, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if request(port, "/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"replica-checks: {what} never became ready")


def serve(index, port, *flags, log):
    env = dict(os.environ, LORE_THREADS="1")
    return subprocess.Popen([LORE, "--index", index, "serve", "--addr", f"127.0.0.1:{port}",
                             "--generator", "light", *flags],
                            stdout=log, stderr=log, env=env)


def current(snaps):
    return os.path.realpath(os.path.join(snaps, "current"))


def main():
    tmp = tempfile.mkdtemp(prefix="lore-replicas-")
    log = open(os.path.join(tmp, "servers.log"), "w")
    procs = []
    try:
        writer_index, snaps = os.path.join(tmp, "writer"), os.path.join(tmp, "snapshots")
        subprocess.run([LORE, "--index", writer_index, "ingest", os.path.join(REPO, "corpora/tiny")],
                       check=True, stdout=subprocess.DEVNULL, stderr=log)
        writer_port = free_port()
        writer = serve(writer_index, writer_port, "--snapshot-dir", snaps, "--snapshot-every", "1", log=log)
        procs.append(writer)
        wait_ready(writer_port, "the writer")
        while not os.path.exists(os.path.join(snaps, "current")):
            time.sleep(0.1)
        first = current(snaps)
        ports = [free_port(), free_port()]

        def replica(n, snapshot):
            copy = os.path.join(tmp, f"replica{n}-{os.path.basename(snapshot)}")
            shutil.copytree(snapshot, copy)
            proc = serve(copy, ports[n], "--read-only", log=log)
            procs.append(proc)
            return proc

        replicas = [replica(0, first), replica(1, first)]
        for n in range(2):
            wait_ready(ports[n], f"replica {n + 1}")
        front = free_port()
        config = os.path.join(tmp, "haproxy.cfg")
        with open(config, "w") as out:
            out.write(open(os.path.join(REPO, "scripts/haproxy/lore.cfg")).read()
                      .replace("127.0.0.1:8080", f"127.0.0.1:{front}")
                      .replace("127.0.0.1:8081", f"127.0.0.1:{ports[0]}")
                      .replace("127.0.0.1:8082", f"127.0.0.1:{ports[1]}"))
        haproxy = subprocess.Popen(["haproxy", "-f", config, "-db"], stdout=log, stderr=log)
        procs.append(haproxy)
        wait_ready(front, "haproxy")

        status, body = request(front, "/v1/documents", {"path": "x.md", "text": "no"})
        assert status == 403 and body["error"]["code"] == "read_only", (status, body)

        results, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    status, body = request(front, "/v1/search", {"query": "zebra espresso blend", "k": 3})
                    top = body["hits"][0]["text"] if status == 200 and body["hits"] else ""
                    results.append((status, NEW_FACT in top))
                except Exception as e:  # a failed request is what this test counts
                    results.append((repr(e), False))

        clients = [threading.Thread(target=load) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(2)
        # A new document on the writer, then a snapshot that holds it.
        docs = os.path.join(tmp, "new")
        os.makedirs(docs)
        with open(os.path.join(docs, "zebra.md"), "w") as out:
            out.write(f"# Zebra blend\n\n{NEW_FACT}\n")
        subprocess.run([LORE, "--index", writer_index, "ingest", docs], check=True,
                       stdout=subprocess.DEVNULL, stderr=log)
        published = time.time()
        while current(snaps) == first or os.path.getmtime(current(snaps)) < published:
            time.sleep(0.1)
        second = current(snaps)
        # Replica 1 dies (-9) and comes back on the new snapshot.
        replicas[0].send_signal(signal.SIGKILL)
        replicas[0].wait()
        replicas[0] = replica(0, second)
        wait_ready(ports[0], "replica 1 on the new snapshot")
        time.sleep(1)
        # Replica 2 is stopped gracefully and comes back on it too.
        replicas[1].send_signal(signal.SIGTERM)
        replicas[1].wait()
        replicas[1] = replica(1, second)
        wait_ready(ports[1], "replica 2 on the new snapshot")
        time.sleep(2)
        stop.set()
        for c in clients:
            c.join()
        failed = [r for r in results if r[0] != 200]
        print(f"replica-checks: {len(results)} searches through haproxy during the rollout, "
              f"{len(failed)} failed")
        assert not failed, failed[:5]
        after = [request(front, "/v1/search", {"query": "zebra espresso blend", "k": 3}) for _ in range(10)]
        assert all(s == 200 and NEW_FACT in b["hits"][0]["text"] for s, b in after), after
        print("replica-checks: after the rollout every answer comes from the new snapshot")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        log.close()
        if os.environ.get("LORE_KEEP_TMP"):
            print(f"replica-checks: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
