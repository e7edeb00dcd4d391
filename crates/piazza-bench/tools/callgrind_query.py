"""Instructions (callgrind) or CPU time a broker spends per query-q request.

query-q is CPU-bound, and its req/s through the harness moves by +-10 %
between runs on a small cloud machine; instruction counts do not move, so
a change of a few per cent shows. A data set is loaded once and copied for
every measurement:

    python3 crates/piazza-bench/tools/callgrind_query.py load target/release/piazza /tmp/qdata
    python3 crates/piazza-bench/tools/callgrind_query.py callgrind target/release/piazza /tmp/qdata 300 /tmp/cgq
    python3 crates/piazza-bench/tools/callgrind_query.py cpu target/release/piazza /tmp/qdata 6000

`load` upserts 100,000 entities shaped like the harness's template entity
(two temperatures, uniform over 10..40; a status of four) with one broker.
`callgrind` runs `piazza serve` under callgrind on a copy, sends 50 requests
of warm-up, zeroes the counters, sends N requests (4 connections) and prints
the whole process's instructions per request, and those of `read::query`
and of `decode`; `callgrind_annotate --inclusive=yes <out>.1` says the rest.
`cpu` runs the broker natively and prints its CPU time (user + system)
per request over N requests. The queries are those of the harness's
query-q: `q=temperature>39.70..39.90;status=="<one of four>"`, pages of 20.
Needs valgrind for `callgrind`.
"""
import glob, http.client, json, os, random, shutil, signal, subprocess, sys, threading, time

LINK = ('<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld>; '
        'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"')
STATUSES = ["healthy", "swarming", "queenless", "alert"]
PORT = 18111


def entity(n, rng):
    at = "2024-05-01T%02d:%02d:%02dZ" % (n % 86400 // 3600, n // 60 % 60, n % 60)
    prop = lambda value, unit, **extra: dict({"type": "Property", "value": value, "unitCode": unit, "observedAt": at}, **extra)
    return {"id": "urn:ngsi-ld:BeeHive:d%08d" % n, "type": "BeeHive",
            "temperature": [prop(10 + rng.randrange(3000) / 100, "CEL", datasetId="urn:ngsi-ld:Dataset:temperature:inside"),
                            prop(10 + rng.randrange(3000) / 100, "CEL", datasetId="urn:ngsi-ld:Dataset:temperature:outside")],
            "humidity": [prop(40 + rng.randrange(50), "P1", datasetId="urn:ngsi-ld:Dataset:humidity:inside"),
                         prop(30 + rng.randrange(60), "P1", datasetId="urn:ngsi-ld:Dataset:humidity:outside")],
            "incomingBees": prop(rng.randrange(2000), "C62", accuracy=prop(0.95, "C62")),
            "outgoingBees": prop(rng.randrange(2000), "C62"),
            "weight": prop(20 + rng.randrange(4000) / 100, "KGM"),
            "status": prop(rng.choice(STATUSES), "C62"),
            "belongs": {"type": "Relationship", "object": "urn:ngsi-ld:Apiary:%04d" % rng.randrange(1000), "observedAt": at},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [
                round(10 + rng.random() * 2, 6), round(43 + rng.random(), 6)]}}}


def start(binary, data, wrap=()):
    broker = subprocess.Popen(list(wrap) + [binary, "serve", "--addr", "127.0.0.1:%d" % PORT, "--data-dir", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return broker
        except OSError:
            time.sleep(0.1)
    broker.kill()
    sys.exit("the broker did not answer /health")


def stop(broker):
    broker.send_signal(signal.SIGTERM)
    broker.wait()


def run(requests, connections=4):
    """Sends (method, path, body) requests over keep-alive connections; exits on any non-2xx."""
    pending = iter(requests)
    lock = threading.Lock()
    failures = []

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
        while True:
            with lock:
                try:
                    method, path, body = next(pending)
                except StopIteration:
                    return
            payload = None if body is None else json.dumps(body, separators=(",", ":"))
            c.request(method, path, body=payload, headers={"Content-Type": "application/json", "Link": LINK})
            r = c.getresponse()
            r.read()
            if r.status >= 300:
                failures.append(r.status)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit("%d requests failed, first with HTTP %d" % (len(failures), failures[0]))


def queries(count, rng):
    for _ in range(count):
        q = 'temperature>%.2f;status=="%s"' % (39.70 + rng.randrange(21) / 100, rng.choice(STATUSES))
        q = q.replace('"', "%22").replace(">", "%3E").replace(";", "%3B")
        yield ("GET", "/ngsi-ld/v1/entities?type=BeeHive&q=" + q, None)


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def copy_of(data, suffix):
    work = data.rstrip("/") + suffix
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(data, work)
    return work


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("load", "callgrind", "cpu"):
        sys.exit(__doc__)
    mode, binary, data = sys.argv[1:4]
    if mode == "load":
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        broker = start(binary, data)
        rng = random.Random(7)
        batches = (("POST", "/ngsi-ld/v1/entityOperations/upsert", [entity(b * 500 + i, rng) for i in range(500)])
                   for b in range(200))
        run(batches, connections=2)
        stop(broker)
        print("100000 entities in", data)
        return
    n = int(sys.argv[4])
    rng = random.Random(11)
    if mode == "cpu":
        work = copy_of(data, ".cpu")
        broker = start(binary, work)
        run(queries(500, rng))
        before, began = cpu_seconds(broker.pid), time.time()
        run(queries(n, rng))
        spent = cpu_seconds(broker.pid) - before
        print("%s: %.1f us of broker CPU per query (%d queries in %.1f s)" % (binary, spent / n * 1e6, n, time.time() - began))
        stop(broker)
        shutil.rmtree(work, ignore_errors=True)
        return
    out = sys.argv[5]
    for old in glob.glob(out + "*"):
        os.remove(old)
    work = copy_of(data, ".cg")
    broker = start(binary, work, ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out])
    run(queries(50, rng))
    subprocess.run(["callgrind_control", "-z", str(broker.pid)], stdout=subprocess.DEVNULL, check=True)
    run(queries(n, rng))
    subprocess.run(["callgrind_control", "-d", str(broker.pid)], stdout=subprocess.DEVNULL, check=True)
    time.sleep(1)
    stop(broker)
    shutil.rmtree(work, ignore_errors=True)
    report = subprocess.run(["callgrind_annotate", "--inclusive=yes", out + ".1"], capture_output=True, text=True).stdout
    # A function inlined into others is listed once per source file it came
    # from; the largest count is the whole function.
    most = {}
    for line in report.splitlines():
        count = line.strip().split(" ", 1)[0].replace(",", "")
        if not count.isdigit():
            continue
        for label, marker in (("whole process", "PROGRAM TOTALS"), ("read::query", "piazza_store_embedded::read::query"),
                              ("decode", "piazza_store_embedded::decode")):
            if marker in line:
                most[label] = max(most.get(label, 0), int(count))
    for label in ("whole process", "read::query", "decode"):
        print("%s: %.0fk instructions per request" % (label, most.get(label, 0) / n / 1000))

if __name__ == "__main__":
    main()
