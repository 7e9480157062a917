use super::*;

const MINIMAL: &str = r#"
state_dir = "state"
assets_dir = "/srv/assets"
[network]
interface = "br0"
[[dhcp.subnet]]
cidr = "10.0.0.0/24"
ranges = [["10.0.0.100", "10.0.0.200"]]
"#;

/// The one-line error `text` is refused with.
fn refusal(text: &str) -> String {
    Config::parse(Path::new("r.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn every_file_in_configs_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no config in {}", dir.display());
}

#[test]
fn store_sync_and_service_account() {
    let p = Path::new("/etc/rackboot/rackboot.toml");
    let cfg = Config::parse(p, MINIMAL).unwrap();
    assert_eq!(
        cfg.store,
        StoreConfig::Sqlite {
            sync: crate::store::SyncMode::None
        },
        "the default"
    );
    assert_eq!(cfg.run_as, None);
    let cfg = Config::parse(
        p,
        &format!("{MINIMAL}[store]\nsync = \"group\"\n[service]\nuser = \"rackboot\"\n"),
    )
    .unwrap();
    assert_eq!(
        cfg.store,
        StoreConfig::Sqlite {
            sync: crate::store::SyncMode::Group
        }
    );
    assert_eq!(
        cfg.run_as,
        Some(RunAsConfig {
            user: "rackboot".into(),
            group: None
        })
    );
    for (extra, want) in [
        (
            "[store]\nsync = \"sometimes\"\n",
            "unknown variant `sometimes`",
        ),
        (
            "[service]\ngroup = \"rackboot\"\n",
            "service.group needs service.user",
        ),
        ("[service]\nuser = \"\"\n", "must not be empty"),
    ] {
        let e = refusal(&format!("{MINIMAL}{extra}"));
        assert!(e.contains(want), "{extra}: {e}");
    }
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let cfg = Config::parse(Path::new("/etc/rackboot/rackboot.toml"), MINIMAL).unwrap();
    assert_eq!(cfg.state_dir, Path::new("/etc/rackboot/state"));
    assert_eq!(cfg.assets_dir, Path::new("/srv/assets"));
    assert_eq!(cfg.bootenvs_dir, Path::new("/etc/rackboot/bootenvs"));
    assert_eq!(cfg.default_bootenv, "discovery");
    assert_eq!(cfg.tftp, Some(69));
    assert_eq!(cfg.tftp_max_transfers, 256);
    assert_eq!(cfg.tftp_max_per_address, 8);
    assert_eq!(cfg.tftp_limits.first_ack.as_secs(), 4);
    assert_eq!(cfg.http_bounds, crate::http::bounds::Bounds::default());
    let text = format!(
        "{MINIMAL}[http]\nmax_connections = 300\nmax_connections_per_address = 0\n\
         reserved_connections = 10\nheader_timeout = \"2s\"\nidle_timeout = \"5s\"\n\
         [tftp]\nmax_transfers_per_address = 2\nfirst_ack_timeout = \"1500ms\"\n"
    );
    let cfg = Config::parse(Path::new("/r.toml"), &text).unwrap();
    let r = cfg.http_bounds.resolve(1 << 20);
    assert_eq!((r.max_connections, r.per_address, r.reserve), (300, 0, 10));
    assert_eq!(cfg.http_bounds.timeouts.header.as_secs(), 2);
    assert_eq!(cfg.http_bounds.timeouts.idle.as_secs(), 5);
    assert_eq!(cfg.tftp_max_per_address, 2);
    assert_eq!(cfg.tftp_limits.first_ack.as_millis(), 1500);
    assert_eq!(cfg.dhcp.loaders.bios, "undionly.kpxe");
    assert_eq!(cfg.dhcp.subnets.len(), 1);
    assert_eq!(cfg.dhcp.subnets[0].lease_seconds, 3600);
    assert_eq!(cfg.dhcp.subnets[0].mode, SubnetMode::Dhcp);
    assert_eq!(cfg.lifecycle, crate::boot::Timeouts::default());
    let text = format!(
        "{MINIMAL}[lifecycle]\nreport_timeout = \"90s\"\ninstall_timeout = \"1h 30m\"\nheartbeat_timeout = \"45s\"\n"
    );
    let cfg = Config::parse(Path::new("/r.toml"), &text).unwrap();
    assert_eq!(cfg.lifecycle.report.as_secs(), 90);
    assert_eq!(cfg.lifecycle.install.as_secs(), 5400);
    assert_eq!(cfg.lifecycle.heartbeat.as_secs(), 45);
    assert_eq!(
        cfg.dhcp
            .subnet_of("10.0.0.7".parse().unwrap())
            .map(|s| s.cidr),
        Some("10.0.0.0/24".parse().unwrap())
    );
}

#[test]
fn unknown_client_bounds_and_relays() {
    let cfg = Config::parse(Path::new("/r.toml"), MINIMAL).unwrap();
    let sn = &cfg.dhcp.subnets[0];
    assert_eq!((sn.unknown_share, sn.unknown_rate), (90, 0));
    assert!(sn.relays.is_empty());
    assert_eq!(
        cfg.reap_discovered_after,
        Some(std::time::Duration::from_secs(3600))
    );
    let text = MINIMAL.replace(
        "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]",
        "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]\nunknown_share = 50\n\
         unknown_rate = 10\nrelays = [\"10.9.0.1\", \"10.9.0.2\"]",
    ) + "[lifecycle]\nreap_discovered_after = \"10m\"\n";
    let cfg = Config::parse(Path::new("/r.toml"), &text).unwrap();
    let sn = &cfg.dhcp.subnets[0];
    assert_eq!((sn.unknown_share, sn.unknown_rate), (50, 10));
    assert_eq!(sn.relays.len(), 2);
    assert_eq!(
        cfg.reap_discovered_after,
        Some(std::time::Duration::from_secs(600))
    );
    for never in ["0", "never"] {
        let text = format!("{MINIMAL}[lifecycle]\nreap_discovered_after = \"{never}\"\n");
        let cfg = Config::parse(Path::new("/r.toml"), &text).unwrap();
        assert_eq!(cfg.reap_discovered_after, None, "{never}");
    }
    let bad = MINIMAL.replace(
        "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]",
        "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]\nunknown_share = 101",
    );
    let err = refusal(&bad);
    assert!(err.contains("dhcp.subnet[0].unknown_share"), "{err}");
    let bad = format!("{MINIMAL}[lifecycle]\nreap_discovered_after = \"soon\"\n");
    let err = refusal(&bad);
    assert!(err.contains("lifecycle.reap_discovered_after"), "{err}");
}

#[test]
fn identity_names_port_or_uuid_and_port_needs_its_relays() {
    let with = |lines: &str| {
        MINIMAL.replace(
            "ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]",
            &format!("ranges = [[\"10.0.0.100\", \"10.0.0.200\"]]\n{lines}"),
        )
    };
    let cfg = Config::parse(Path::new("/r.toml"), MINIMAL).unwrap();
    assert!(cfg.dhcp.subnets[0].identity.mac_only());
    let cfg = Config::parse(
        Path::new("/r.toml"),
        &with("identity = [\"port\", \"uuid\"]\nrelays = [\"10.9.0.1\"]"),
    )
    .unwrap();
    let id = cfg.dhcp.subnets[0].identity;
    assert!(id.port && id.uuid);
    let cfg = Config::parse(Path::new("/r.toml"), &with("identity = \"uuid\"")).unwrap();
    assert!(cfg.dhcp.subnets[0].identity.uuid);
    let err = refusal(&with("identity = \"port\""));
    assert!(
        err.contains("dhcp.subnet[0].identity") && err.contains("`relays`"),
        "{err}"
    );
    let err = refusal(&with("identity = \"serial\""));
    assert!(err.contains("`serial` is no identity"), "{err}");
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = MINIMAL.replace("[network]", "[network]\ninterfcae = \"x\"");
    let err = Config::parse(Path::new("r.toml"), &text).unwrap_err();
    let msg = err.to_string();
    assert!(err.is_parse());
    assert!(msg.contains("r.toml"), "{msg}");
    assert!(msg.contains("interfcae"), "{msg}");
    assert!(msg.contains("line 5, column 1"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "one line: {msg}");
}

#[test]
fn semantic_errors_name_the_key() {
    let cases = [
        (
            MINIMAL.replace("10.0.0.200", "10.0.1.5"),
            "dhcp.subnet[0].ranges",
        ),
        (
            MINIMAL.replace(
                "[[dhcp.subnet]]",
                "[dhcp]\nlease_seconds = 5\n[[dhcp.subnet]]",
            ),
            "dhcp.lease_seconds",
        ),
        (
            format!("{MINIMAL}[[dhcp.subnet]]\ncidr = \"10.0.0.128/25\"\n"),
            "dhcp.subnet[1].cidr",
        ),
        (
            format!("{MINIMAL}[[dhcp.subnet]]\ncidr = \"10.1.0.5/16\"\n"),
            "dhcp.subnet[1].cidr",
        ),
        (
            format!(
                "{MINIMAL}[[dhcp.subnet]]\ncidr = \"10.1.0.0/16\"\nmode = \"proxy\"\nranges = [[\"10.1.0.5\", \"10.1.0.9\"]]\n"
            ),
            "dhcp.subnet[1].ranges",
        ),
        (
            MINIMAL.replace(
                "\"10.0.0.200\"]]",
                "\"10.0.0.200\"], [\"10.0.0.150\", \"10.0.0.160\"]]",
            ),
            "dhcp.subnet[0].ranges",
        ),
        (
            format!("{MINIMAL}[[dhcp.subnet]]\ncidr = \"10.9.0.0/24\"\nrouter = \"10.8.0.1\"\n"),
            "dhcp.subnet[1].router",
        ),
        (
            MINIMAL.replace(
                "interface = \"br0\"",
                "interface = \"br0\"\naddress = \"10.0.0.150\"",
            ),
            "network.address",
        ),
        (
            format!("{MINIMAL}[dns]\ndomain = \"bad domain\"\n"),
            "dns.domain",
        ),
        (
            format!("{MINIMAL}[lifecycle]\nreport_timeout = \"ten minutes\"\n"),
            "lifecycle.report_timeout",
        ),
        (
            format!("{MINIMAL}[lifecycle]\ninstall_timeout = \"0s\"\n"),
            "lifecycle.install_timeout",
        ),
        (
            format!("{MINIMAL}[api]\ntls_cert = \"c.pem\"\ntls_port = 8443\n"),
            "api.tls_cert",
        ),
        (
            format!("{MINIMAL}[api]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_port = 80\n"),
            "api.tls_port",
        ),
        (
            format!("{MINIMAL}[lifecycle]\nheartbeat_timeout = \"20s\"\n"),
            "lifecycle.heartbeat_timeout",
        ),
        (
            format!("{MINIMAL}[dns]\nforwarders = [\"10.0.0.53\", \"resolver\"]\n"),
            "dns.forwarders[1]",
        ),
        (
            format!("{MINIMAL}[dns]\nforwarders = [\"10.0.0.53:0\"]\n"),
            "dns.forwarders[0]",
        ),
        (
            format!("{MINIMAL}[tftp]\nbusy_poll = \"5ms\"\n"),
            "tftp.busy_poll",
        ),
        (
            format!("{MINIMAL}[tftp]\nbusy_poll = \"soon\"\n"),
            "tftp.busy_poll",
        ),
        (
            format!("{MINIMAL}[tftp]\nfirst_ack_timeout = \"100ms\"\n"),
            "tftp.first_ack_timeout",
        ),
        (
            format!("{MINIMAL}[http]\nheader_timeout = \"100ms\"\n"),
            "http.header_timeout",
        ),
        (
            format!("{MINIMAL}[http]\nmax_connections = 10\nreserved_connections = 10\n"),
            "http.reserved_connections",
        ),
    ];
    for (text, key) in cases {
        let msg = refusal(&text);
        assert!(msg.contains(key), "{key}: {msg}");
    }
}

#[test]
fn the_drop_folder_is_off_unless_named() {
    let cfg = Config::parse(Path::new("/etc/rackboot/r.toml"), MINIMAL).unwrap();
    assert_eq!(cfg.assets.drop_dir, None);
    let text = MINIMAL.replace("[network]", "[assets]\ndrop_dir = \"drop\"\n[network]");
    let cfg = Config::parse(Path::new("/etc/rackboot/r.toml"), &text).unwrap();
    assert_eq!(
        cfg.assets.drop_dir.as_deref(),
        Some(Path::new("/etc/rackboot/drop"))
    );
}

#[test]
fn dns_forwarders_default_to_port_53() {
    let cfg = Config::parse(Path::new("r.toml"), MINIMAL).unwrap();
    assert!(
        cfg.dns.unwrap().forwarders.is_empty(),
        "no forwarding unless asked"
    );
    let text = format!(
        "{MINIMAL}[dns]\nforwarders = [\"10.0.0.53\", \"10.0.0.54:5353\", \"[fd00::1]:53\", \"fd00::2\"]\n"
    );
    let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
    let got: Vec<String> = cfg
        .dns
        .unwrap()
        .forwarders
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "10.0.0.53:53",
            "10.0.0.54:5353",
            "[fd00::1]:53",
            "[fd00::2]:53"
        ]
    );
}

#[test]
fn credentials_and_names_are_hardened_by_choice_and_bound_by_default() {
    let cfg = Config::parse(Path::new("/etc/rackboot/r.toml"), MINIMAL).unwrap();
    assert!(cfg.bind_tokens_to_address);
    assert_eq!(cfg.dns.unwrap().names, DnsNames::Hostname);
    assert_eq!(cfg.default_hostname, HostnameScheme::Mac);
    assert_eq!(cfg.secrets_dir, Path::new("/etc/rackboot/secrets"));
    let text = format!(
        "secrets_dir = \"/srv/secrets\"\n{MINIMAL}[http]\nbind_tokens_to_address = false\n\
         [dns]\nnames = \"none\"\n[nodes]\ndefault_hostname = \"random\"\n"
    );
    let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
    assert!(!cfg.bind_tokens_to_address);
    assert_eq!(cfg.dns.unwrap().names, DnsNames::None);
    assert_eq!(cfg.default_hostname, HostnameScheme::Random);
    assert_eq!(cfg.secrets_dir, Path::new("/srv/secrets"));
    let bad = format!("{MINIMAL}[dns]\nnames = \"mac\"\n");
    assert!(Config::parse(Path::new("r.toml"), &bad).is_err());
}

#[test]
fn services_can_be_switched_off() {
    let text = format!("{MINIMAL}[tftp]\nenabled = false\n[dns]\nenabled = false\n");
    let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
    assert_eq!(cfg.tftp, None);
    assert!(cfg.dns.is_none());
    assert_eq!(cfg.http, Some(80));
}

#[test]
fn admission_is_off_by_default_and_a_subnet_overrides_it() {
    let cfg = Config::parse(Path::new("r.toml"), MINIMAL).unwrap();
    assert_eq!(cfg.admission.max_booting, 0);
    assert_eq!(cfg.admission.slot_timeout.as_secs(), 300);
    assert_eq!(
        cfg.admission.subnets,
        vec![("10.0.0.0/24".parse().unwrap(), 0)]
    );
    let text = format!(
        "{MINIMAL}max_booting = 8\n[[dhcp.subnet]]\ncidr = \"10.1.0.0/24\"\n[admission]\nmax_booting = 32\nslot_timeout = \"90s\"\n"
    );
    let cfg = Config::parse(Path::new("r.toml"), &text).unwrap();
    assert_eq!(cfg.admission.max_booting, 32);
    assert_eq!(cfg.admission.slot_timeout.as_secs(), 90);
    assert_eq!(
        cfg.admission.subnets,
        vec![
            ("10.0.0.0/24".parse().unwrap(), 8),
            ("10.1.0.0/24".parse().unwrap(), 32)
        ]
    );
    let text = format!("{MINIMAL}[admission]\nslot_timeout = \"soon\"\n");
    let msg = refusal(&text);
    assert!(msg.contains("admission.slot_timeout"), "{msg}");
}

#[test]
fn api_paths_resolve_and_default_to_disabled() {
    let cfg = Config::parse(Path::new("/etc/rb/r.toml"), MINIMAL).unwrap();
    assert_eq!(cfg.api, ApiConfig::default());
    let text = format!(
        "{MINIMAL}[api]\ntokens_file = \"tokens\"\ntls_cert = \"/tls/c.pem\"\ntls_key = \"k.pem\"\ntls_port = 8443\n"
    );
    let cfg = Config::parse(Path::new("/etc/rb/r.toml"), &text).unwrap();
    assert_eq!(
        cfg.api.tokens_file.as_deref(),
        Some(Path::new("/etc/rb/tokens"))
    );
    assert_eq!(
        cfg.api.tls,
        Some(TlsConfig {
            cert: "/tls/c.pem".into(),
            key: "/etc/rb/k.pem".into(),
            port: 8443
        })
    );
}

/// `configs/rackboot.toml` documents every key, and where it gives a key a
/// value that value is the default: each section as the example writes it
/// equals the section's `Default`, but for what a working file must set (its
/// paths, interface and subnets).
#[test]
fn the_example_config_states_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/rackboot.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let raw: Raw = toml::from_str(&text).unwrap_or_else(|e| panic!("{}", toml_error(&text, &e)));
    assert_eq!(raw.bootenvs_dir, default_bootenvs_dir());
    assert_eq!(raw.scripts_dir, default_scripts_dir());
    assert_eq!(raw.cloud_init_dir, default_cloud_init_dir());
    assert_eq!(raw.answers_dir, default_answers_dir());
    assert_eq!(raw.secrets_dir, default_secrets_dir());
    assert_eq!(raw.assets, assets::Section::default());
    assert_eq!(raw.boot, boot::Section::default());
    assert!(!raw.dhcp.subnet.is_empty(), "the example serves a subnet");
    let example_subnet = &raw.dhcp.subnet[0];
    assert_eq!(
        (
            example_subnet.mode,
            example_subnet.unknown_clients,
            example_subnet.unknown_share,
            example_subnet.unknown_rate
        ),
        (
            SubnetMode::default(),
            UnknownClients::default(),
            dhcp::default_unknown_share(),
            0
        )
    );
    let dhcp = dhcp::Section {
        subnet: Vec::new(),
        ..raw.dhcp
    };
    assert_eq!(dhcp, dhcp::Section::default());
    assert_eq!(raw.tftp, tftp::Section::default());
    assert_eq!(raw.http, http::Section::default());
    assert_eq!(raw.dns, dns::Section::default());
    assert_eq!(raw.lifecycle, lifecycle::Section::default());
    assert_eq!(raw.api, api::Section::default());
    assert_eq!(raw.console, console::Section::default());
    assert_eq!(raw.admission, admission::Section::default());
    assert_eq!(raw.nodes, nodes::Section::default());
    assert_eq!(raw.store, store::Section::default());
    assert_eq!(raw.service, service::Section::default());
    assert_eq!(raw.power, power::Section::default());
    assert_eq!(raw.rollout, rollout::Section::default());
}

/// A file that names no key of a section gets the values the servers' own
/// types default to, and naming the section empty changes nothing.
#[test]
fn absent_and_empty_sections_give_the_defaults() {
    let p = Path::new("/etc/rackboot/rackboot.toml");
    let cfg = Config::parse(p, MINIMAL).unwrap();
    assert_eq!(cfg.tftp_limits, crate::tftp::Limits::default());
    assert_eq!(cfg.http_bounds, crate::http::bounds::Bounds::default());
    assert_eq!(cfg.lifecycle, crate::boot::Timeouts::default());
    assert_eq!(cfg.tftp_busy_poll, std::time::Duration::from_micros(200));
    assert_eq!(
        (cfg.tftp, cfg.tftp_max_transfers, cfg.tftp_max_per_address),
        (Some(69), 256, 8)
    );
    assert_eq!(cfg.http, Some(80));
    let dns = cfg.dns.as_ref().unwrap();
    assert_eq!((dns.port, dns.domain.as_str()), (53, "rack.internal"));
    assert_eq!(
        (
            cfg.dhcp.enabled,
            cfg.dhcp.rate_limit_per_mac,
            cfg.dhcp.rate_limit_per_relay
        ),
        (true, 20, 50_000)
    );
    assert_eq!(
        cfg.dhcp.loaders,
        LoaderMap {
            bios: "undionly.kpxe".into(),
            x86_64_efi: "ipxe-amd64.efi".into(),
            arm64_efi: "ipxe-arm64.efi".into(),
            x86_64_efi_grub: "shimx64.efi".into(),
            arm64_efi_grub: "shimaa64.efi".into(),
            upgrade_old_ipxe: false,
            local_boot: LocalBoot::Script,
        }
    );
    assert_eq!(cfg.cloud_init_dir, Path::new("/etc/rackboot/cloud-init"));
    assert_eq!(cfg.answers_dir, Path::new("/etc/rackboot/answers"));
    assert_eq!(cfg.scripts_dir, Path::new("/etc/rackboot/scripts"));
    let empty = format!(
        "{MINIMAL}[dhcp.loaders]\n[assets]\n[boot]\n[tftp]\n[http]\n[dns]\n[lifecycle]\n\
         [api]\n[admission]\n[nodes]\n[store]\n[service]\n"
    );
    let with_empty = Config::parse(p, &empty).unwrap();
    assert_eq!(format!("{with_empty:?}"), format!("{cfg:?}"));
}

#[test]
fn a_postgres_store_needs_a_url_and_takes_no_sqlite_keys() {
    let p = Path::new("/etc/rackboot/rackboot.toml");
    let cfg = Config::parse(
        p,
        &format!(
            "{MINIMAL}[store]\nengine = \"postgres\"\n\
             url = \"host=db1 dbname=rackboot user=rackboot sslmode=require\"\n\
             password_file = \"db-password\"\nappliance = \"row-a\"\nca_file = \"db-ca.pem\"\n"
        ),
    )
    .unwrap();
    assert_eq!(
        cfg.store,
        StoreConfig::Postgres {
            url: "host=db1 dbname=rackboot user=rackboot sslmode=require".into(),
            password_file: Some("/etc/rackboot/db-password".into()),
            appliance: Some("row-a".into()),
            ca_file: Some("/etc/rackboot/db-ca.pem".into()),
        }
    );
    for (section, key) in [
        ("engine = \"postgres\"\n", "store.url"),
        (
            "engine = \"postgres\"\nurl = \"host=db1 port=x\"\n",
            "store.url",
        ),
        (
            "engine = \"postgres\"\nurl = \"host=db1\"\nsync = \"group\"\n",
            "store.sync",
        ),
        (
            "engine = \"postgres\"\nurl = \"host=db1\"\nappliance = \"row a\"\n",
            "store.appliance",
        ),
        (
            "engine = \"postgres\"\nurl = \"host=db1\"\nca_file = \"ca.pem\"\n",
            "store.ca_file",
        ),
        ("url = \"host=db1\"\n", "store.url"),
        ("ca_file = \"ca.pem\"\n", "store.ca_file"),
        ("appliance = \"a\"\n", "store.appliance"),
    ] {
        let err = Config::parse(p, &format!("{MINIMAL}[store]\n{section}")).unwrap_err();
        assert!(err.to_string().contains(key), "{section}: {err}");
    }
    let err = Config::parse(p, &format!("{MINIMAL}[store]\nengine = \"mysql\"\n")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("unknown variant `mysql`") && msg.contains("line 10"),
        "{msg}"
    );
}

#[test]
fn power_commands_are_checked_at_load_and_name_the_key() {
    let p = Path::new("/etc/rackboot/rackboot.toml");
    let cfg = Config::parse(p, MINIMAL).unwrap();
    assert_eq!(cfg.power, PowerConfig::default());
    let commands = "[power.command]\nstatus = \"pdu status {{ address }}\"\non = \"pdu on {{ address }}\"\n\
                    off = \"pdu off {{ address }}\"\npxe_once = \"vm boot-once {{ hostname }}\"\n";
    let cfg = Config::parse(p, &format!("{MINIMAL}[power]\nparallel = 2\n{commands}")).unwrap();
    assert_eq!(cfg.power.parallel, 2);
    assert_eq!(
        cfg.power.command.map(|c| c.pxe_once),
        Some("vm boot-once {{ hostname }}".to_string())
    );
    let typo = commands.replace("{{ hostname }}", "{{ hostnam }}");
    let e = Config::parse(p, &format!("{MINIMAL}{typo}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("power.command.pxe_once") && e.contains("hostnam"),
        "{e}"
    );
    let e = Config::parse(p, &format!("{MINIMAL}[power]\nparallel = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("power.parallel"), "{e}");
}
