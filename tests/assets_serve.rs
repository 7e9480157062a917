//! Assets arriving while rackboot serves: a bootenv naming kernels by upstream URL and sha256
//! (fetched once on first request, checked, served locally), and kernels dropped into the
//! watched drop folder. The real `rackboot serve` in a [`Lab`] namespace, real `curl`s, and a
//! real upstream HTTP server (python3's http.server, slowed down so that concurrent first
//! requests really overlap) whose request log counts the downloads.
//!
//! Needs root (namespaces), curl and python3. Every wait is bounded; processes are ended by
//! PID when the lab is dropped, also when a test fails.

mod common;

use std::path::Path;
use std::time::Duration;

use common::lab::{self, Lab, SERVER_IP};
use common::server::Server;
use common::setup::{Setup, pseudo_random};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);
const MAC: &str = "52:54:00:aa:00:43";
const UPSTREAM_PORT: u16 = 8080;
/// How long the upstream server waits before answering each GET.
const UPSTREAM_DELAY: &str = "1.5";

/// An upstream mirror: serves `dir`, sleeps before each GET, logs one line per request.
const UPSTREAM: &str = r#"
import functools, http.server, sys, time
class Slow(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        time.sleep(float(sys.argv[3]))
        super().do_GET()
    def log_message(self, fmt, *args):
        sys.stderr.write((fmt % args) + "\n")
        sys.stderr.flush()
srv = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])),
    functools.partial(Slow, directory=sys.argv[4]))
print("upstream ready", flush=True)
srv.serve_forever()
"#;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// rackboot serving a script and a placeholder asset, with `bootenv` as discovery.toml. Boot
/// scripts go to any address (the documented opt-out): the test's curl is at rackboot's own.
fn setup(name: &str, bootenv: &str) -> Setup {
    Setup::new(name)
        .no_address()
        .no_api_tokens()
        .lab_subnet(10, 20)
        .tftp("")
        .tokens_from_any_address()
        .file("assets/placeholder", "kernel")
        .file("scripts/hello.sh", "echo hi\n")
        .file("bootenvs/discovery.toml", bootenv)
}

/// GET `path` from rackboot into `out`; returns the HTTP status and, on error, the body.
fn fetch(lab: &Lab, path: &str, out: &Path) -> (u16, String) {
    let url = format!("http://{SERVER_IP}{path}");
    let o = lab.run(
        "curl",
        &[
            "-s",
            "-m",
            "25",
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{http_code}",
            &url,
        ],
        WAIT,
    );
    let status = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = if status == 200 {
        String::new()
    } else {
        String::from_utf8_lossy(&std::fs::read(out).unwrap_or_default()).into_owned()
    };
    (status, body)
}

fn get(rb: &Server, path: &str) -> String {
    rb.get(path).text()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn remote_assets_are_fetched_once_checked_and_served_locally() {
    // A kernel is checked to be one once downloaded: give the bytes a bzImage header.
    let kernel = as_bzimage(pseudo_random(1, 3 << 20));
    let initrd = pseudo_random(2, 200_000);
    // An EFI application (iPXE's .efi, say) that a bootenv names as a kernel.
    let mut efi_app = pseudo_random(5, 100_000);
    efi_app[0..2].copy_from_slice(b"MZ");
    efi_app[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    efi_app[0x80..0x84].copy_from_slice(b"PE\0\0");
    efi_app[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    let (k_sha, i_sha, e_sha) = (sha256(&kernel), sha256(&initrd), sha256(&efi_app));
    let mirror = format!("http://{SERVER_IP}:{UPSTREAM_PORT}");
    let bootenv = format!(
        "scripts = [\"hello.sh\"]\n[arch.bios]\n\
         kernel = {{ url = \"{mirror}/vmlinuz\", sha256 = \"{k_sha}\" }}\n\
         initrds = [{{ url = \"{mirror}/initrd.img\", sha256 = \"{i_sha}\" }}]\n\
         cmdline = \"console=ttyS0\"\n\
         [arch.x86_64_efi]\n\
         kernel = {{ url = \"{mirror}/ipxe.efi\", sha256 = \"{e_sha}\" }}\n"
    );
    let rb = setup("remote", &bootenv).prepare();
    let lab = &rb.lab;
    let upstream = lab.dir().join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    std::fs::write(upstream.join("vmlinuz"), &kernel).unwrap();
    std::fs::write(upstream.join("ipxe.efi"), &efi_app).unwrap();
    // initrd.img is not on the mirror yet.

    let script = lab.dir().join("upstream.py");
    std::fs::write(&script, UPSTREAM).unwrap();
    let upstream_log = lab.dir().join("upstream.log");
    lab.spawn(
        "python3",
        &[
            script.to_str().unwrap(),
            &SERVER_IP.to_string(),
            &UPSTREAM_PORT.to_string(),
            UPSTREAM_DELAY,
            upstream.to_str().unwrap(),
        ],
        &upstream_log,
    );
    lab::wait_for_file(&upstream_log, "upstream ready", WAIT).unwrap_or_else(|e| panic!("{e}"));
    let upstream_gets = |name: &str| {
        lab::read_text(&upstream_log)
            .lines()
            .filter(|l| l.contains(&format!("\"GET /{name} ")))
            .count()
    };

    rb.serve();
    let store = rb.path("assets/sha256");

    // The boot script names the assets by digest.
    let ipxe = get(&rb, &format!("/boot/{MAC}.ipxe?arch=bios"));
    assert!(
        ipxe.contains(&format!("/assets/sha256/{k_sha}?mac="))
            && ipxe.contains(&format!("/assets/sha256/{i_sha}?mac=")),
        "{ipxe}"
    );

    // Eight concurrent first requests: one upstream GET, eight identical copies.
    let kernel_path = format!("/assets/sha256/{k_sha}");
    let results: Vec<(u16, String, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let kernel_path = &kernel_path;
                s.spawn(move || {
                    let out = lab.dir().join(format!("kernel.{i}"));
                    let (status, body) = fetch(lab, kernel_path, &out);
                    (status, body, std::fs::read(&out).unwrap_or_default())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body, got) in &results {
        assert_eq!(*status, 200, "{body}");
        assert!(got == &kernel, "served bytes differ from the mirror's");
    }
    assert_eq!(
        upstream_gets("vmlinuz"),
        1,
        "{}",
        lab::read_text(&upstream_log)
    );
    // Later requests are served from the store.
    assert_eq!(fetch(lab, &kernel_path, &lab.dir().join("again")).0, 200);
    assert_eq!(upstream_gets("vmlinuz"), 1);
    assert_eq!(
        std::fs::read(store.join(&k_sha)).unwrap(),
        kernel,
        "stored under its digest"
    );

    // Not on the mirror: 502 saying why, nothing kept.
    let initrd_path = format!("/assets/sha256/{i_sha}");
    let out = lab.dir().join("initrd");
    let (status, body) = fetch(lab, &initrd_path, &out);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("initrd.img") && body.contains("404") && body.contains("tries again"),
        "{body}"
    );
    // The wrong file on the mirror: refused by its digest, nothing kept.
    std::fs::write(upstream.join("initrd.img"), b"not the initrd").unwrap();
    let (status, body) = fetch(lab, &initrd_path, &out);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("sha256 is") && body.contains(&i_sha),
        "{body}"
    );
    assert_eq!(
        files_in(&store),
        vec![k_sha.clone()],
        "nothing partial kept"
    );
    // The right bytes, but an EFI application named as a kernel: 502 saying so, not kept.
    let (status, body) = fetch(lab, &format!("/assets/sha256/{e_sha}"), &out);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("ipxe.efi")
            && body.contains("[arch.x86_64_efi]")
            && body.contains("EFI application, not a Linux kernel"),
        "{body}"
    );
    assert_eq!(files_in(&store), vec![k_sha.clone()], "not kept");
    // Fixed on the mirror: the next request fetches it.
    std::fs::write(upstream.join("initrd.img"), &initrd).unwrap();
    let (status, body) = fetch(lab, &initrd_path, &out);
    assert_eq!(status, 200, "{body}");
    assert!(std::fs::read(&out).unwrap() == initrd);
    assert_eq!(upstream_gets("initrd.img"), 3, "one per try");

    let fetches = "rackboot_asset_fetches_total";
    assert_eq!(
        rb.try_metric(&format!("{fetches}{{result=\"fetched\"}}")),
        Some(2.0)
    );
    // The initrd missing, then wrong; the EFI application.
    assert_eq!(
        rb.try_metric(&format!("{fetches}{{result=\"failed\"}}")),
        Some(3.0)
    );
}

/// The first bytes of an x86_64 bzImage (boot protocol 2.15, 64-bit) with an EFI stub, enough
/// for detection: what `[arch.bios]` and `[arch.x86_64_efi]` both boot.
fn bzimage() -> Vec<u8> {
    as_bzimage(pseudo_random(3, 64 * 1024))
}

/// `b` with an x86_64 EFI-stub bzImage header over its first bytes.
fn as_bzimage(mut b: Vec<u8>) -> Vec<u8> {
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x400u32.to_le_bytes());
    b[0x400..0x404].copy_from_slice(b"PE\0\0");
    b[0x404..0x406].copy_from_slice(&0x8664u16.to_le_bytes());
    b[510] = 0x55;
    b[511] = 0xAA;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
    b
}

#[test]
fn dropped_kernels_are_imported_by_the_running_server() {
    let setup = setup(
        "drop",
        "scripts = [\"hello.sh\"]\n[arch.bios]\nkernel = \"placeholder\"\ncmdline = \"console=ttyS0\"\n",
    );
    let drop_dir = setup.path("drop");
    let rb = setup
        .table("assets", &format!("drop_dir = \"{}\"", drop_dir.display()))
        .start();
    let lab = &rb.lab;

    let kernel = bzimage();
    let initrd = pseudo_random(4, 100_000);
    let put = |rel: &str, b: &[u8]| {
        let p = drop_dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    };
    put("discovery/x86_64/kernel", &kernel);
    put("discovery/x86_64/initrd.img", &initrd);
    // The same x86_64 kernel offered as arm64's.
    put("discovery/arm64/kernel", &kernel);

    let reasons = |sub: &str| -> Vec<String> {
        files_in(&drop_dir.join(sub))
            .into_iter()
            .filter(|n| n.ends_with(".reason"))
            .map(|n| std::fs::read_to_string(drop_dir.join(sub).join(n)).unwrap())
            .collect()
    };
    lab::poll_until(WAIT, || {
        (reasons("done").len() == 1 && reasons("rejected").len() == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("not imported: {}", lab::tail(&rb.log_text(), 20)));
    let (done, rejected) = (&reasons("done")[0], &reasons("rejected")[0]);
    let (k_sha, i_sha) = (sha256(&kernel), sha256(&initrd));
    assert!(
        done.contains(&format!("kernel sha256/{k_sha}"))
            && done.contains("[arch.bios] [arch.x86_64_efi]"),
        "{done}"
    );
    assert!(
        rejected.contains("is for x86_64") && rejected.contains("not arm64"),
        "{rejected}"
    );
    // The moved folders hold what was dropped; the drop folder is empty again.
    let done_dir = files_in(&drop_dir.join("done"))
        .into_iter()
        .find(|n| !n.ends_with(".reason"))
        .unwrap();
    assert!(done_dir.ends_with("-discovery-x86_64"), "{done_dir}");
    assert_eq!(
        files_in(&drop_dir.join("done").join(&done_dir)),
        ["initrd.img", "kernel"]
    );
    assert_eq!(files_in(&drop_dir), ["done", "rejected"]);

    // The running server boots the new kernel once its hot reload has read the bootenv.
    lab::poll_until(WAIT, || {
        get(&rb, &format!("/boot/{MAC}.ipxe?arch=bios"))
            .contains(&format!("/assets/sha256/{k_sha}?mac="))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", get(&rb, &format!("/boot/{MAC}.ipxe?arch=bios"))));
    let ipxe = get(&rb, &format!("/boot/{MAC}.ipxe?arch=bios"));
    assert!(
        ipxe.contains(&format!("/assets/sha256/{i_sha}?mac=")),
        "{ipxe}"
    );
    assert!(
        ipxe.contains("console=ttyS0"),
        "the cmdline was kept: {ipxe}"
    );
    let out = lab.dir().join("kernel.out");
    assert_eq!(fetch(lab, &format!("/assets/sha256/{k_sha}"), &out).0, 200);
    assert!(std::fs::read(&out).unwrap() == kernel);

    let drops = "rackboot_asset_drops_total";
    assert_eq!(
        rb.try_metric(&format!("{drops}{{result=\"imported\"}}")),
        Some(1.0)
    );
    assert_eq!(
        rb.try_metric(&format!("{drops}{{result=\"rejected\"}}")),
        Some(1.0)
    );
    let text = rb.log_text();
    assert!(
        text.contains("drop folder: discovery/arm64 rejected"),
        "{text}"
    );
    rb.assert_running();
}
