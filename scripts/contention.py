#!/usr/bin/env python3
"""Decoding while others search: a generation's decode rate through
`lore serve`, alone and while N clients search in a loop, for each
`server.work_nice` given (the same index, the same run).

    python3 scripts/contention.py LORE_BIN INDEX [--clients 8] [--answers 8] [--nice 19 --nice 0]  (19: the default)

INDEX must already hold documents (e.g. `lore --index /tmp/hb ingest
corpora/handbook/docs`). Prints one JSON line per setting: decode tokens/s
alone and under load, their ratio, searches answered per second, and
where the cores went while the loaded answers were written: CPU seconds
per second of the clients (this process) and of the server's threads by
name (Linux /proc).
"""
import argparse
import json
import os
import re
import resource
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

QUESTIONS = [
    "How quickly must a SEV1 page be acknowledged?",
    "How many vacation days carry over to next year?",
    "What is the per diem for travel?",
]
SEARCHES = [
    "how do I rotate API keys", "SEV1 acknowledgement time", "travel expenses per diem",
    "laptop screen lock", "database failover steps", "phishing simulation",
    "parental leave", "on-call handover",
]


def post(url, body, timeout=600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def decode_rates(base, n):
    rates = []
    for i in range(n):
        answer = post(f"{base}/v1/ask", {"question": QUESTIONS[i % len(QUESTIONS)], "k": 3,
                                         "max_tokens": 64, "temperature": 0})
        t = answer["timings"]
        if t["gen_tokens"] > 1 and t["gen_ms"] > 0:
            rates.append(t["gen_tokens"] / (t["gen_ms"] / 1000))
    return sorted(rates)[len(rates) // 2] if rates else 0.0


def thread_cpu(pid):
    """CPU seconds of each of `pid`'s threads, summed by name without digits."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = re.sub(r"[0-9]+", "N", stat[stat.index("(") + 1:stat.rindex(")")])
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def clients_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(lore, index, nice, clients, answers):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(f"[server]\nwork_nice = {nice}\n")
        config = f.name
    server = subprocess.Popen([lore, "--config", config, "--index", index, "serve",
                               "--addr", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/readyz", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        decode_rates(base, 1)  # loads the model
        alone = decode_rates(base, answers)
        stop = threading.Event()
        done = [0] * clients

        def search(i):
            while not stop.is_set():
                post(f"{base}/v1/search", {"query": SEARCHES[(i + done[i]) % len(SEARCHES)], "k": 5})
                done[i] += 1

        threads = [threading.Thread(target=search, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        time.sleep(2)
        start, before = time.time(), sum(done)
        server_before, clients_before = thread_cpu(server.pid), clients_cpu()
        loaded = decode_rates(base, answers)
        elapsed = time.time() - start
        searches = (sum(done) - before) / elapsed
        server_after, clients_after = thread_cpu(server.pid), clients_cpu()
        cores = {name: round((t - server_before.get(name, 0.0)) / elapsed, 2)
                 for name, t in server_after.items()}
        stop.set()
        for t in threads:
            t.join()
        print(json.dumps({"work_nice": nice, "clients": clients,
                          "decode_alone_tok_s": round(alone, 1),
                          "decode_loaded_tok_s": round(loaded, 1),
                          "ratio": round(loaded / alone, 2) if alone else None,
                          "searches_per_s": round(searches, 1),
                          "clients_cores": round((clients_after - clients_before) / elapsed, 2),
                          "server_cores": {k: v for k, v in sorted(cores.items()) if v >= 0.01}}),
              flush=True)
    finally:
        server.terminate()
        server.wait()
        os.unlink(config)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lore")
    ap.add_argument("index")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--answers", type=int, default=8)
    ap.add_argument("--nice", type=int, action="append")
    args = ap.parse_args()
    for nice in args.nice or [19, 0]:
        run(args.lore, args.index, nice, args.clients, args.answers)


if __name__ == "__main__":
    main()
