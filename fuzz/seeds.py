#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/.

The seeds are real traffic and real files: DHCP packets captured from
firmware (src/dhcp/testdata/*.hex), the TFTP, HTTP and DNS requests real
clients send (iPXE, PXE ROMs, tftp-hpa, atftp, curl, dig), configs/ and the
test suite's bootenvs and CSV files. `.ci/fuzz --cmin` (cargo fuzz cmin)
minimises them into fuzz/corpus/<target>/, which is what is committed.

    python3 fuzz/seeds.py        (from anywhere; overwrites fuzz/seeds/)
"""
import pathlib
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def dhcp():
    for f in sorted((ROOT / "src/dhcp/testdata").glob("*.hex")):
        if f.name.startswith("hostile-"):
            continue  # past crashes: fuzz/regressions/dhcp/
        put("dhcp", f.stem, bytes.fromhex(f.read_text().strip()))


def tftp_packet():
    z = b"\0"
    rrq = lambda body: b"\0\1" + body
    put("tftp_packet", "ipxe-rrq", rrq(b"undionly.kpxe\0octet\0blksize\0" b"1432\0tsize\0" b"0\0"))
    put("tftp_packet", "pxe-rom-tsize-probe", rrq(b"ipxe-amd64.efi\0octet\0tsize\0" b"0\0"))
    put("tftp_packet", "pxe-rom-padded", rrq(b"undionly.kpxe\0octet\0blksize\0" b"1456\0" + z * 6))
    put("tftp_packet", "windowed", rrq(b"x86_64/vmlinuz\0OCTET\0windowsize\0" b"16\0blksize\0" b"8192\0timeout\0" b"3\0"))
    put("tftp_packet", "netascii", rrq(b"pxelinux.cfg/default\0netascii\0"))
    put("tftp_packet", "unknown-option", rrq(b"grub.cfg\0octet\0multicast\0\0rollover\0" b"0\0"))
    put("tftp_packet", "wrq", b"\0\2upload\0octet\0")
    put("tftp_packet", "data", b"\0\3\0\1" + bytes(range(64)))
    put("tftp_packet", "ack", b"\0\4\0\1")
    put("tftp_packet", "ack-padded", b"\0\4\xff\xff\0\0")
    put("tftp_packet", "error-option-refused", b"\0\5\0\x08User aborted the transfer\0")
    put("tftp_packet", "oack", b"\0\6blksize\0" b"1432\0tsize\0" b"53248\0")


def tftp_session():
    # flags (blksize, tsize, timeout, windowsize, honor timeout), the values
    # they take, limits, size, path blksize, then ops: 0 send, 1 ACK, 2 time, 3 ERROR.
    head = lambda flags, *fields: bytes([flags]) + b"".join(fields)
    u16 = lambda v: struct.pack(">H", v)
    u32 = lambda v: struct.pack(">I", v)
    ops = b"\0" + b"\1" + u16(0) + b"\0" + b"\1" + u16(1) + b"\0" + b"\2" + u16(100) + b"\0" + b"\1" + u16(2) + b"\0"
    put("tftp_session", "oack-blksize", head(0b11, u16(1432), u16(8192), u16(64), u32(4000), u16(1468)) + ops)
    put("tftp_session", "plain", head(0, u16(65464), u16(64), u32(1024), u16(1468)) + b"\0\1\0\1\0\1\0\2\0\1\0\3")
    put("tftp_session", "windowed", head(0b1011, u16(512), u16(8), u16(8192), u16(16), u32(100000), u16(1468)) + ops * 4)
    put("tftp_session", "silent", head(0b11, u16(1432), u16(8192), u16(64), u32(4000), u16(1468)) + b"\0" + (b"\2\xff\xff") * 8)


def http_head():
    host = b"Host: 10.77.0.1\r\n"
    put("http_head", "ipxe-script", b"GET /boot/52:54:00:12:34:56.ipxe HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: iPXE/1.21.1+\r\n" + host + b"\r\n")
    put("http_head", "ipxe-kernel", b"GET /assets/x86_64/vmlinuz?mac=52:54:00:12:34:56 HTTP/1.1\r\nUser-Agent: iPXE/1.21.1+\r\n" + host + b"\r\n")
    put("http_head", "curl-head-close", b"HEAD /assets/x86_64/initrd.img HTTP/1.1\r\n" + host + b"User-Agent: curl/7.88.1\r\nAccept: */*\r\nConnection: close\r\n\r\n")
    put("http_head", "uefi-http-boot", b"GET /assets/ipxe-amd64.efi?mac=52:54:00:77:00:01 HTTP/1.1\r\n" + host + b"Accept: */*\r\nUser-Agent: UefiHttpBoot/1.0\r\n\r\n")
    put("http_head", "range", b"GET /assets/arm64/Image HTTP/1.1\r\n" + host + b"Range: bytes=0-1023\r\n\r\n")
    put("http_head", "api-post", b"POST /api/v1/nodes HTTP/1.1\r\n" + host + b"Content-Length: 2\r\n\r\n{}")
    put("http_head", "http10", b"GET /boot/52:54:00:12:34:56.ipxe HTTP/1.0\r\n\r\n")
    put("http_head", "partial", b"GET /boot/52:54:00:12:34:56.ipxe HTTP/1.1\r\nHost: 10.")
    put("http_head", "pipelined", b"GET /boot/a.ipxe HTTP/1.1\r\n" + host + b"\r\nGET /boot/b.ipxe HTTP/1.1\r\n" + host + b"\r\n")


def dns():
    def name(n):
        return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".") if l) + b"\0"

    def query(qid, qname, qtype, rd=True, edns=None, qclass=1):
        flags = 0x0100 if rd else 0
        ar = 1 if edns is not None else 0
        m = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, ar) + name(qname) + struct.pack(">HH", qtype, qclass)
        if edns is not None:
            m += b"\0" + struct.pack(">HHIH", 41, edns, 0, 0)
        return m

    put("dns", "a-node", query(1, "node1.rack.internal", 1))
    put("dns", "a-apex-edns", query(2, "rack.internal", 1, edns=1232))
    put("dns", "ptr-node", query(3, "11.0.0.10.in-addr.arpa", 12))
    put("dns", "ptr-relayed", query(4, "3.2.1.10.in-addr.arpa", 12, edns=4096))
    put("dns", "ptr-bad-label", query(5, "12.0.0.10.in-addr.arpa", 12))
    put("dns", "soa-reverse", query(6, "0.0.10.in-addr.arpa", 6))
    put("dns", "ns-apex", query(7, "rack.internal", 2))
    put("dns", "any-apex", query(8, "rack.internal", 255))
    put("dns", "aaaa-nodata", query(9, "node1.rack.internal", 28))
    put("dns", "nxdomain", query(10, "ghost.rack.internal", 1))
    put("dns", "outside-forwarded", query(11, "debian.org", 1))
    put("dns", "outside-no-rd", query(12, "debian.org", 1, rd=False))
    put("dns", "chaos-version", query(13, "version.bind", 16, qclass=3))
    bad_version = query(14, "node1.rack.internal", 1, edns=1232)
    put("dns", "edns-version-1", bad_version[:-7] + struct.pack(">BBH", 0, 1, 0) + b"\0\0")
    put("dns", "header-only", struct.pack(">HHHHHH", 15, 0x0100, 0, 0, 0, 0))
    put("dns", "notify", struct.pack(">HHHHHH", 16, 0x2000, 1, 0, 0, 0) + name("rack.internal") + struct.pack(">HH", 6, 1))


def selector():
    for i, s in enumerate([
        "role=builder", "role=builder,rack=r12", " role = builder , rack=r12 ", "rack!=r12",
        "rack", "!rack", "role=builder,!gpu", "topology.example.com/zone=a", "role==builder", "a,,b",
    ]):
        put("selector", f"s{i}", s)


def bootenv():
    discovery = (ROOT / "configs/bootenvs/discovery.toml").read_text()
    put("bootenv", "discovery", discovery)
    for s in sorted((ROOT / "configs/scripts").iterdir()):
        put("bootenv", f"discovery+{s.stem}", discovery.encode() + b"\0" + s.read_bytes())
    put("bootenv", "local", '[arch.bios]\nlocal = "sanboot"\n[arch.x86_64_efi]\nlocal = "exit"\n')
    put("bootenv", "installer", 'description = "installer"\ninstaller = true\nafter_install = "discovery"\n'
        '[arch.x86_64_efi]\nkernel = "vmlinuz"\ninitrds = ["initrd.img"]\n'
        'cmdline = "inst.ks={{ server_url }}/answers/{{ node.mac }}/{{ node.token }}/kickstart.cfg {% if node.labels.role %}role={{ node.labels.role }}{% endif %}"\n')
    put("bootenv", "remote", '[arch.x86_64_efi]\nkernel = { url = "https://deb.debian.org/debian/vmlinuz", '
        'sha256 = "' + "ab" * 32 + '" }\ninitrds = ["x86_64/initrd.img"]\ncmdline = "quiet"\n')
    put("bootenv", "selector-script", discovery.encode() + b"\0#!/bin/sh\n# rackboot-selector: role=builder,rack=r12\n"
        b"# rackboot-bootenv: discovery\necho {{ node.labels.rack }} {{ node.params | tojson }}\n")


def config():
    put("config", "rackboot.toml", (ROOT / "configs/rackboot.toml").read_bytes())
    put("config", "tests-minimal", 'state_dir = "/tmp/s"\nassets_dir = "/tmp/a"\nbootenvs_dir = "/tmp/b"\n'
        'scripts_dir = "/tmp/c"\n[network]\ninterface = "rb-br0"\naddress = "10.77.0.1"\n'
        '[dhcp]\nenabled = false\n[tftp]\nenabled = false\n[dns]\nenabled = true\n'
        '[api]\ntokens_file = "/tmp/tokens.toml"\n')
    put("config", "relayed-subnets", '[network]\ninterface = "br0"\n[dhcp]\nenabled = true\n'
        '[[dhcp.subnet]]\ncidr = "10.77.0.0/24"\nrange = ["10.77.0.100", "10.77.0.199"]\nrouter = "10.77.0.254"\n'
        '[[dhcp.subnet]]\ncidr = "10.1.0.0/16"\nrange = ["10.1.0.10", "10.1.255.200"]\nmode = "proxy"\n')


def node_csv():
    put("node_csv", "rack12", "# rack 12\nmac,hostname,bootenv,labels,protected\n"
        "52:54:00:00:12:01,b1,discovery,rack=r12;role=builder,yes\n52:54:00:00:12:02,b2,,rack=r12,\n")
    put("node_csv", "export", "mac,hostname,ipv4,bootenv,next_bootenv,bootenv_expires,loader,protected,labels,params\n"
        "52:54:00:00:00:01,b1,10.77.0.21,discovery,local,1767225600,ipxe-amd64.efi,true,rack=r1;role=builder,disk=/dev/sda\n")
    put("node_csv", "quoted", 'mac,hostname,params\n"52:54:00:00:00:03","b3","console=""ttyS0,115200"";x=y"\n')


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    for f in (dhcp, tftp_packet, tftp_session, http_head, dns, selector, bootenv, config, node_csv):
        f()
    print(f"seeds written to {OUT}")
