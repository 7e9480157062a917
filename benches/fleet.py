#!/usr/bin/env python3
"""Helpers of benches/fleet.sh (not run alone): the fleet's records, put into
rackboot through its import API and written as Kea host reservations, and
the probe that times a server's start to its first DHCPOFFER.

Record i (0-based) of a fleet, the same for both servers:
  MAC       02:fb:<i as 4 bytes>  (locally administered; perfdhcp's MACs
            start 00:0c:01, so no perfdhcp client is ever one of them)
  hostname  fleet-<i, 7 digits>
  ipv4      10.97.0.1 upwards, skipping .0 and .255 of every /24: inside
            the benchmark's 10.96.0.0/11, outside its dynamic range
            (10.96.1.0 - 10.96.255.254); room for MAX_RECORDS
  labels    rack=r<i // 40, 5 digits> (rackboot only: Kea has no labels)

  fleet.py import HOST:PORT TOKEN N BATCH   POST /api/v1/nodes/import, BATCH
                                            records a request; progress on stderr
  fleet.py kea OUT N IFACE SUBNET POOL LEASES LOG
                                            Kea's config with N reservations
  fleet.py probe SERVER GIADDR TIMEOUT OUT  relayed DISCOVERs every 5 ms from
                                            GIADDR:67 until an OFFER comes back;
                                            writes "ready" to OUT once bound,
                                            then the OFFER's arrival time (epoch s)
"""

import http.client
import json
import os
import random
import socket
import struct
import sys
import time

MAX_RECORDS = (127 - 97 + 1) * 256 * 254  # 10.97.0.0 - 10.127.255.255, no .0/.255


def mac(i):
    return "02:fb:%02x:%02x:%02x:%02x" % ((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)


def ipv4(i):
    block, host = divmod(i, 254)  # block: the /24, host: 1..254 in it
    return "10.%d.%d.%d" % (97 + block // 256, block % 256, host + 1)


def hostname(i):
    return "fleet-%07d" % i


def rack(i):
    return "r%05d" % (i // 40)


def do_import(addr, token, n, batch):
    host, port = addr.rsplit(":", 1)
    head = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    t0 = time.monotonic()
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        body = json.dumps([
            {"mac": mac(i), "hostname": hostname(i), "ipv4": ipv4(i), "labels": {"rack": rack(i)}}
            for i in range(lo, hi)
        ], separators=(",", ":")).encode()
        conn = http.client.HTTPConnection(host, int(port), timeout=600)
        t1 = time.monotonic()
        conn.request("POST", "/api/v1/nodes/import", body, head)
        resp = conn.getresponse()
        text = resp.read()
        conn.close()
        if resp.status != 200:
            sys.exit("import of records %d..%d: HTTP %d: %s" % (lo, hi - 1, resp.status, text[:500].decode(errors="replace")))
        created = len(json.loads(text).get("created", []))
        if created != hi - lo:
            sys.exit("import of records %d..%d: %d created, not %d" % (lo, hi - 1, created, hi - lo))
        print("  imported %7d of %d (batch of %d, %d KiB: %.2f s; %.1f s so far)"
              % (hi, n, hi - lo, len(body) // 1024, time.monotonic() - t1, time.monotonic() - t0),
              file=sys.stderr, flush=True)


def do_kea(out, n, iface, subnet, pool, leases, log):
    # Written piece by piece: a million reservations never sit in memory as objects.
    head = {
        "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "memfile", "persist": True, "name": leases, "lfc-interval": 0},
        "valid-lifetime": 3600,
        "dhcp-ddns": {"enable-updates": False},
        "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": log}], "severity": "WARN"}],
    }
    with open(out, "w") as f:
        f.write('{"Dhcp4": %s,\n' % json.dumps(head)[:-1])
        f.write('"subnet4": [{"id": 1, "subnet": %s, "pools": [{"pool": %s}], "reservations": [\n'
                % (json.dumps(subnet), json.dumps(pool)))
        for i in range(n):
            f.write('%s{"hw-address": "%s", "ip-address": "%s", "hostname": "%s"}\n'
                    % ("," if i else "", mac(i), ipv4(i), hostname(i)))
        f.write("]}]}}\n")


def discover(chaddr, giaddr, xid):
    pkt = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, xid, 0, 0,
                      b"\0" * 4, b"\0" * 4, b"\0" * 4, socket.inet_aton(giaddr),
                      chaddr + b"\0" * 10, b"", b"")
    pkt += b"\x63\x82\x53\x63" + bytes([53, 1, 1, 55, 3, 1, 3, 6, 255])
    return pkt + b"\0" * max(0, 300 - len(pkt))


def is_offer(data, xid):
    if len(data) < 240 or data[0] != 2 or struct.unpack("!I", data[4:8])[0] != xid:
        return False
    opts, i = data[240:], 0
    while i + 1 < len(opts) and opts[i] != 255:
        if opts[i] == 0:
            i += 1
            continue
        if opts[i] == 53 and opts[i + 1] == 1 and i + 2 < len(opts):
            return opts[i + 2] == 2
        i += 2 + opts[i + 1]
    return False


def do_probe(server, giaddr, timeout, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((giaddr, 67))  # a relay: the server answers to giaddr, port 67
    s.settimeout(0.005)
    chaddr = bytes([0x02, 0xfe, 0x00, 0x00, 0x00, 0x01])  # not a fleet MAC, not perfdhcp's
    xid = random.getrandbits(32)
    pkt = discover(chaddr, giaddr, xid)
    with open(out, "w") as f:
        f.write("ready\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s.sendto(pkt, (server, 67))
        except OSError:
            pass  # no route yet, or an ICMP error reported: the server is not up
        until = time.monotonic() + 0.005
        while time.monotonic() < until:
            try:
                data = s.recv(2048)
            except (socket.timeout, BlockingIOError):
                break
            except OSError:
                continue
            if is_offer(data, xid):
                with open(out, "a") as f:
                    f.write("%.6f\n" % time.time())
                return
    sys.exit("no DHCPOFFER within %s s" % timeout)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "import":
        n = int(args[2])
        if n > MAX_RECORDS:
            sys.exit("at most %d records fit the address plan" % MAX_RECORDS)
        do_import(args[0], args[1], n, int(args[3]))
    elif cmd == "kea":
        n = int(args[1])
        if n > MAX_RECORDS:
            sys.exit("at most %d records fit the address plan" % MAX_RECORDS)
        do_kea(args[0], n, *args[2:7])
    elif cmd == "probe":
        do_probe(args[0], args[1], float(args[2]), args[3])
    elif cmd == "max":
        print(MAX_RECORDS)
    else:
        sys.exit("fleet.py: unknown command " + cmd)


if __name__ == "__main__":
    os.umask(0o022)
    main()
