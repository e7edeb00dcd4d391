"""Instructions the embedded store's writer spends per write, under callgrind.

The harness measures throughput, which on a small cloud machine moves by
+-25 % between runs and, at 16 connections, is bound by the WAL's sync as
much as by the writer. This counts instructions instead: deterministic, so a
change of a few per cent on the write path shows.

    python3 crates/piazza-bench/tools/callgrind_writes.py target/release/piazza 1000 2000 /tmp/cg

runs `piazza serve` under `valgrind --tool=callgrind` on a fresh data dir,
sends N creates of the harness's template entity, then M single-attribute
PATCHes of random ones (8 connections), then N new entities again as batch
upserts of 100, and dumps the profile after each phase (/tmp/cg.1:
creates, /tmp/cg.2: PATCHes, /tmp/cg.3: batch upserts). Then

    callgrind_annotate --inclusive=yes /tmp/cg.2 | grep 'group::run_group \['

gives the writer's instructions for the phase (the script prints them per
request). Needs valgrind (Debian package `valgrind`); takes about a minute.
"""
import sys, os, json, subprocess, time, threading, http.client, tempfile, signal, random, shutil
binary = sys.argv[1]; n_create = int(sys.argv[2]); n_patch = int(sys.argv[3]); out = sys.argv[4]
port = 18047
data = tempfile.mkdtemp()
LINK = '<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
def body(i):
    at = "2024-05-01T%02d:%02d:%02dZ" % (i % 24, i % 60, i % 60)
    return {"id": "urn:ngsi-ld:BeeHive:cg%06d" % i, "type": "BeeHive",
        "temperature": [{"type": "Property", "value": 10 + i % 30, "unitCode": "CEL", "observedAt": at, "datasetId": "urn:ngsi-ld:Dataset:temperature:inside"},
                        {"type": "Property", "value": 11 + i % 29, "unitCode": "CEL", "observedAt": at, "datasetId": "urn:ngsi-ld:Dataset:temperature:outside"}],
        "humidity": [{"type": "Property", "value": 40 + i % 50, "unitCode": "P1", "observedAt": at, "datasetId": "urn:ngsi-ld:Dataset:humidity:inside"},
                     {"type": "Property", "value": 30 + i % 60, "unitCode": "P1", "observedAt": at, "datasetId": "urn:ngsi-ld:Dataset:humidity:outside"}],
        "incomingBees": {"type": "Property", "value": i % 2000, "unitCode": "C62", "observedAt": at,
                         "accuracy": {"type": "Property", "value": 0.95, "unitCode": "C62", "observedAt": at}},
        "outgoingBees": {"type": "Property", "value": i % 1999, "unitCode": "C62", "observedAt": at},
        "weight": {"type": "Property", "value": 20.0 + (i % 4000) / 100.0, "unitCode": "KGM", "observedAt": at},
        "status": {"type": "Property", "value": ["healthy", "swarming", "queenless", "alert"][i % 4], "unitCode": "C62", "observedAt": at},
        "belongs": {"type": "Relationship", "object": "urn:ngsi-ld:Apiary:%04d" % (i % 1000), "observedAt": at},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [10 + (i % 1000) / 500.0, 43 + (i % 997) / 997.0]}}}
proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary, "serve", "--addr", "127.0.0.1:%d" % port, "--data-dir", data],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5); c.request("GET", "/health"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except Exception: time.sleep(0.5)
def run(reqs):
    it = iter(reqs); lock = threading.Lock(); errors = []
    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                try: method, path, b = next(it)
                except StopIteration: return
            c.request(method, path, body=json.dumps(b), headers={"Content-Type": "application/json", "Link": LINK})
            r = c.getresponse(); r.read()
            if r.status >= 300: errors.append(r.status)
    ts = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in ts]; [t.join() for t in ts]
    if errors: print("errors", errors[:5], len(errors))
subprocess.run(["callgrind_control", "-z", str(proc.pid)], stdout=subprocess.DEVNULL)
run([("POST", "/ngsi-ld/v1/entities", body(i)) for i in range(n_create)])
subprocess.run(["callgrind_control", "--dump=create", str(proc.pid)], stdout=subprocess.DEVNULL)
rng = random.Random(7)
run([("PATCH", "/ngsi-ld/v1/entities/urn:ngsi-ld:BeeHive:cg%06d/attrs/weight" % rng.randrange(n_create),
      {"type": "Property", "value": rng.randrange(4000) / 100.0, "unitCode": "KGM", "observedAt": "2024-05-02T10:00:00Z"}) for _ in range(n_patch)])
subprocess.run(["callgrind_control", "--dump=patch", str(proc.pid)], stdout=subprocess.DEVNULL)
run([("POST", "/ngsi-ld/v1/entityOperations/upsert", [body(i) for i in range(start, min(start + 100, 2 * n_create))])
     for start in range(n_create, 2 * n_create, 100)])
subprocess.run(["callgrind_control", "--dump=upsert", str(proc.pid)], stdout=subprocess.DEVNULL)
proc.send_signal(signal.SIGINT); proc.wait()
shutil.rmtree(data, ignore_errors=True)

def writer_instructions(profile):
    """The writer's inclusive instructions (`group::run_group`) in a dump."""
    report = subprocess.run(["callgrind_annotate", "--inclusive=yes", profile], capture_output=True, text=True).stdout
    for line in report.splitlines():
        if "group::run_group [" in line:
            return int(line.split()[0].replace(",", ""))
    return 0

for phase, dump, count in (("create", out + ".1", n_create), ("PATCH", out + ".2", n_patch),
                           ("batch upsert", out + ".3", n_create)):
    unit = "entity" if phase == "batch upsert" else "request"
    print("%s: %.0fk writer instructions per %s" % (phase, writer_instructions(dump) / max(count, 1) / 1000, unit))
