//! BIOS VM boot time: rackboot against dnsmasq + nginx, in one run, in the VM tests' lab.
//!
//! One diskless x86 BIOS VM (SeaBIOS, qemu's e1000 iPXE option ROM, TCG) powers on in a fresh
//! lab namespace with no IPv6 router on the link (the ROM's 2019 iPXE then waits for IPv6
//! autoconfiguration, as on many real boot networks) and netboots the operational image from:
//!
//! - **reference**: dnsmasq (DHCP; an iPXE client is handed `http://…/boot.ipxe`) and nginx
//!   serving that script, the kernel and the initrd: what a hand-tuned dnsmasq site runs;
//! - **rackboot**: `rackboot serve` with the repository's configs and `boot-assets/dist`.
//!
//! Both boot the same kernel and initrd with the same command line, so the time from power-on
//! to the image's first console line (`rackboot-agent: start`) is the part the servers differ
//! in. rackboot's boot then goes on to `configured` (DHCP in the image, report, config scripts),
//! which the reference has no server for; that time is printed too.
//!
//! Run: `bash benches/vm_boot.sh [--runs N]` (root, `boot-assets/setup.sh` done). Prints each
//! boot, the medians and the ratio reference / rackboot (> 1: rackboot boots faster).

#[path = "../tests/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::lab::{self, BRIDGE, Firmware, Lab, SERVER_IP, Vm};
use common::vm_watch::appliance;

/// One boot under TCG takes 25–45 s; a boot that has not reached the image by then failed.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// The operational image's first console line: the kernel and initrd are loaded and running.
const IMAGE_STARTED: &str = "rackboot-agent: start";
const CONFIGURED: &str = "rackboot-agent: configured";
/// nginx's port in the reference lab (rackboot's HTTP is on 80 in its own lab).
const NGINX_PORT: u16 = 8080;

fn main() {
    let runs: usize = std::env::var("VM_BOOT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut reference = Vec::new();
    let mut rackboot = Vec::new();
    let mut configured = Vec::new();
    // Interleaved, so a slow spell of the machine lands on both.
    for run in 1..=runs {
        let r = boot_reference(run);
        println!(
            "run {run} reference: image started {:.1} s",
            r.as_secs_f64()
        );
        reference.push(r);
        let (started, done) = boot_rackboot(run);
        println!(
            "run {run} rackboot:  image started {:.1} s, configured {:.1} s",
            started.as_secs_f64(),
            done.as_secs_f64()
        );
        rackboot.push(started);
        configured.push(done);
    }
    let (r, b, c) = (
        median(&mut reference),
        median(&mut rackboot),
        median(&mut configured),
    );
    println!();
    println!("BIOS VM, power-on to the image's first line (median of {runs}), no IPv6 router:");
    println!("  dnsmasq + nginx  {r:.1} s");
    println!("  rackboot         {b:.1} s   (configured at {c:.1} s)");
    let ratio = r / b;
    println!("  ratio reference / rackboot: {ratio:.2} (target >= 1.00)");
    // For benches/run.sh's table: ROW|what|peer|tool|peer|rackboot|ratio|target|met
    let met = if ratio >= 1.0 { "yes" } else { "no" };
    println!(
        "ROW|BIOS VM power-on to image, s (ratio: peer time / rackboot time)|dnsmasq + nginx|\
         qemu TCG, median of {runs}|{r:.1}|{b:.1}|{ratio:.2}|>= 1.0|{met}"
    );
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

/// The VM of every boot: same firmware, memory and NIC in both labs.
fn start_vm<'a>(lab: &'a Lab, name: &str) -> Vm<'a> {
    lab.vm(name, Firmware::X86Bios).start()
}

/// A boot from rackboot: power-on to the image's first line, and to `configured`.
fn boot_rackboot(run: usize) -> (Duration, Duration) {
    let rb = appliance(&format!("vmboot-rb{run}"))
        .repo_configs()
        .prepare();
    rb.lab.capture(rb.lab.dir().join("boot.pcap"));
    rb.serve();
    let vm = start_vm(&rb.lab, "vm-bios");
    let started = vm.wait_for_serial(IMAGE_STARTED, BOOT_TIMEOUT);
    let done = vm.wait_for_serial(CONFIGURED, BOOT_TIMEOUT);
    (started, done)
}

/// A boot from dnsmasq + nginx: power-on to the image's first line.
fn boot_reference(run: usize) -> Duration {
    let lab = Lab::new(&format!("vmboot-ref{run}"));
    lab.capture(lab.dir().join("boot.pcap"));
    let web = lab.dir().join("www");
    fs::create_dir_all(web.join("x86_64")).expect("create www");
    for f in ["x86_64/vmlinuz", "x86_64/initrd.img"] {
        fs::copy(lab::dist_file(f), web.join(f)).expect("copy asset");
    }
    let base = format!("http://{SERVER_IP}:{NGINX_PORT}");
    // The command line rackboot renders from configs/bootenvs/discovery.toml, minus the token.
    fs::write(
        web.join("boot.ipxe"),
        format!(
            "#!ipxe\nkernel --name kernel {base}/x86_64/vmlinuz console=ttyS0 quiet \
             rackboot.url={base} rackboot.mac=${{mac}}\ninitrd --name initrd.img \
             {base}/x86_64/initrd.img\nboot\n"
        ),
    )
    .expect("write boot.ipxe");
    start_nginx(&lab, &web);
    start_dnsmasq(&lab, &format!("{base}/boot.ipxe"));
    let vm = start_vm(&lab, "vm-bios");
    vm.wait_for_serial(IMAGE_STARTED, BOOT_TIMEOUT)
}

fn start_nginx(lab: &Lab, root: &Path) {
    let dir = lab.dir().join("nginx");
    fs::create_dir_all(dir.join("logs")).expect("create nginx dir");
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\n\
             error_log {dir}/logs/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {dir}/logs/access.log;\n  sendfile on;\n  \
             client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  \
             fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n  \
             server {{ listen {SERVER_IP}:{NGINX_PORT}; root {root}; }}\n}}\n",
            dir = dir.display(),
            root = root.display(),
        ),
    )
    .expect("write nginx.conf");
    let conf = conf.to_str().expect("utf-8 path");
    let prefix = dir.to_str().expect("utf-8 path");
    lab.spawn("nginx", &["-p", prefix, "-c", conf], "nginx.out");
    let url = format!("http://{SERVER_IP}:{NGINX_PORT}/boot.ipxe");
    lab::poll_until(Duration::from_secs(10), || {
        let out = lab.run(
            "curl",
            &["-sf", "-o", "/dev/null", &url],
            Duration::from_secs(5),
        );
        out.status.success().then_some(())
    })
    .expect("nginx serves boot.ipxe within 10 s");
}

fn start_dnsmasq(lab: &Lab, script: &str) {
    let log = lab.dir().join("dnsmasq.log");
    let boot = format!("--dhcp-boot=tag:ipxe,{script}");
    let log_arg = format!("--log-facility={}", log.display());
    let leases = format!(
        "--dhcp-leasefile={}",
        lab.dir().join("dnsmasq.leases").display()
    );
    lab.spawn(
        "dnsmasq",
        &[
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--port=0",
            &format!("--interface={BRIDGE}"),
            "--bind-interfaces",
            "--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h",
            &leases,
            // iPXE sends option 175; anything else would get a loader by TFTP, which qemu's
            // iPXE ROM never needs.
            "--dhcp-match=set:ipxe,175",
            &boot,
            "--log-dhcp",
            &log_arg,
        ],
        "dnsmasq.out",
    );
    lab::wait_for_file(&log, "DHCP, IP range", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("dnsmasq did not start: {e}"));
}
