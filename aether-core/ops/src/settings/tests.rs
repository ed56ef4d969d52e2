use std::path::Path;

use tempfile::TempDir;

use super::*;
use crate::test_support::{Program, REPOSITORY_DEFAULTS};

/// The `[aether]` section of a settings text as the core reads it, with
/// nothing over it (the core's own test holds the shipped file to what it
/// should say).
fn plain_aether_section(text: &str) -> aether_core::AetherConfig {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .get("aether")
        .unwrap()
}

fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load_in(dir: &Path, env: Option<&str>, vars: &[(&str, &str)]) -> Result<Program, SettingsError> {
    load_with(dir, env, vars.iter().copied())
}

#[test]
fn the_repository_defaults_are_the_defaults() {
    let text = std::fs::read_to_string(REPOSITORY_DEFAULTS).unwrap();
    let dir = dir_with(&[("default.toml", &text)]);
    // The `[aether]` section as the core reads it (what it says is held
    // by the core's own test); over the defaults, the programs' data
    // folder.
    let mut shipped = Program {
        aether: plain_aether_section(&text),
        ..Program::default()
    };
    shipped.service.data_dir = Some("data".into());
    assert_eq!(load_in(dir.path(), None, &[]).unwrap(), shipped);
}

#[test]
fn the_overlay_overrides_the_defaults_and_must_exist() {
    let dir = dir_with(&[
        (
            "default.toml",
            "[aether]\nmin_amplitude = 0.02\nmax_propagation = 7\n[log]\nlevel = \"info\"\n",
        ),
        (
            "production.toml",
            "[aether]\nmin_amplitude = 0.03\n[log]\nformat = \"json\"\n",
        ),
    ]);
    let program = load_in(dir.path(), Some("production"), &[]).unwrap();
    assert_eq!(program.aether.min_amplitude, 0.03);
    assert_eq!(program.aether.max_propagation, 7);
    assert_eq!(program.log.format, LogFormat::Json);

    let err = load_in(dir.path(), Some("staging"), &[]).unwrap_err();
    assert_eq!(err.kind(), SettingsErrorKind::MissingFile);
    let text = err.to_string();
    assert!(
        text.contains("staging.toml") && text.contains("AETHER_ENV=staging"),
        "{text}"
    );

    let err = load_in(dir.path(), Some("../production"), &[]).unwrap_err();
    assert_eq!(err.kind(), SettingsErrorKind::BadEnvironment);

    let empty = tempfile::tempdir().unwrap();
    let err = load_in(empty.path(), None, &[]).unwrap_err();
    assert_eq!(err.kind(), SettingsErrorKind::MissingFile);
    assert!(err.to_string().contains("default.toml"), "{err}");
}

#[test]
fn variables_override_the_files() {
    let dir = dir_with(&[("default.toml", "[aether]\nmin_amplitude = 0.02\n")]);
    let program = load_in(
        dir.path(),
        None,
        &[
            ("AETHER__AETHER__MIN_AMPLITUDE", "0.05"),
            ("AETHER__SERVICE__NOISE_FLOOR", "0.2"),
            ("aether__service__rate_limit_per_s", "150"),
            ("AETHER__AETHER__NATS__RETRY_ON_INITIAL_CONNECT", "true"),
            ("AETHER__AETHER__NATS__URLS", "nats://a:4222, nats://b:4222"),
            ("AETHER__AETHER__HOPPING__SECRET", "0123456789abcdef0123"),
            ("AETHER__LOG__LEVEL", ""), // empty: unset
            ("AETHER_ENV_UNRELATED", "x"),
            ("PATH", "/bin"),
        ],
    )
    .unwrap();
    assert_eq!(program.aether.min_amplitude, 0.05);
    assert_eq!(program.service.noise_floor, 0.2);
    assert_eq!(program.service.rate_limit_per_s, Some(150.0));
    assert!(program.aether.nats.retry_on_initial_connect);
    assert_eq!(program.aether.nats.urls, ["nats://a:4222", "nats://b:4222"]);
    assert_eq!(
        program.aether.hopping.secret.as_ref().map(|s| s.expose()),
        Some("0123456789abcdef0123")
    );
    assert_eq!(program.log.level, "info");
}

#[test]
fn an_unknown_key_is_named() {
    let dir = dir_with(&[("default.toml", "[aether]\nmin_amplitud = 0.05\n")]);
    let err = load_in(dir.path(), None, &[]).unwrap_err();
    assert_eq!(err.kind(), SettingsErrorKind::UnknownKey);
    assert_eq!(err.key(), Some("aether.min_amplitud"));
    let text = err.to_string();
    assert!(
        text.starts_with("unknown setting aether.min_amplitud: expected one of"),
        "{text}"
    );

    let dir = dir_with(&[("default.toml", "")]);
    let err = load_in(dir.path(), None, &[("AETHER__SERVICE__NOISE_FLOR", "0.2")]).unwrap_err();
    assert_eq!(err.key(), Some("service.noise_flor"), "{err}");
    let err = load_in(dir.path(), None, &[("AETHER__SERVIC__NOISE_FLOOR", "0.2")]).unwrap_err();
    assert_eq!(err.key(), Some("servic"), "{err}");
    assert!(err.to_string().contains("unknown setting servic"), "{err}");
}

#[test]
fn a_wrong_type_is_named_with_its_value() {
    let dir = dir_with(&[("default.toml", "[aether]\nmin_amplitude = \"loud\"\n")]);
    let err = load_in(dir.path(), None, &[]).unwrap_err();
    assert_eq!(err.kind(), SettingsErrorKind::WrongType);
    assert_eq!(
        (err.key(), err.value()),
        (Some("aether.min_amplitude"), Some("loud"))
    );
    let text = err.to_string();
    assert!(
        text.starts_with("wrong type for setting aether.min_amplitude = loud: expected"),
        "{text}"
    );
    assert!(text.contains("default.toml"), "the file is named: {text}");

    let dir = dir_with(&[("default.toml", "")]);
    let err = load_in(
        dir.path(),
        None,
        &[("AETHER__SERVICE__SHUTDOWN_GRACE_MS", "soon")],
    )
    .unwrap_err();
    assert_eq!(err.kind(), SettingsErrorKind::WrongType);
    assert_eq!(
        (err.key(), err.value()),
        (Some("service.shutdown_grace_ms"), Some("soon"))
    );
    assert!(err.to_string().contains("the environment"), "{err}");

    let err = load_in(dir.path(), None, &[("AETHER__LOG__FORMAT", "xml")]).unwrap_err();
    assert_eq!(
        (err.key(), err.value()),
        (Some("log.format"), Some("xml")),
        "{err}"
    );
    assert!(err.to_string().contains("`human`"), "{err}");
}

#[test]
fn an_out_of_range_value_is_named_with_its_value() {
    let dir = dir_with(&[("default.toml", "[service]\nnoise_floor = 1.5\n")]);
    let err = load_in(dir.path(), None, &[]).unwrap_err();
    assert_eq!(err.kind(), SettingsErrorKind::Invalid);
    assert_eq!(
        err.to_string(),
        "invalid setting service.noise_floor = 1.5: must be in [0, 1]"
    );

    let dir = dir_with(&[("default.toml", "")]);
    let cases = [
        (
            "AETHER__AETHER__MIN_AMPLITUDE",
            "2",
            "aether.min_amplitude",
            "must be in [0, 1)",
        ),
        (
            "AETHER__AETHER__NATS__URLS",
            "http://x",
            "aether.nats.urls",
            "http://x",
        ),
        (
            "AETHER__SERVICE__RATE_LIMIT_PER_S",
            "0",
            "service.rate_limit_per_s",
            "above 0",
        ),
        ("AETHER__LOG__LEVEL", "inof", "log.level", "inof"),
        (
            "AETHER__LOG__LEVEL",
            "aether=loud",
            "log.level",
            "aether=loud",
        ),
        (
            "AETHER__TELEMETRY__OTLP_ENDPOINT",
            "collector:4317",
            "telemetry.otlp_endpoint",
            "http",
        ),
        (
            "AETHER__SERVICE__RATE_LIMIT_PER_S",
            "2e9",
            "service.rate_limit_per_s",
            "at most 1e9",
        ),
        (
            "AETHER__SERVICE__RELIABILITY__ATTEMPTS",
            "0",
            "service.reliability.attempts",
            "1 to 100",
        ),
        (
            "AETHER__SERVICE__RELIABILITY__BASE_BACKOFF_MS",
            "5000",
            "service.reliability.base_backoff_ms",
            "at most max_backoff_ms",
        ),
        (
            "AETHER__RESOURCES__MAX_RSS_BYTES",
            "0",
            "resources.max_rss_bytes",
            "at least 1",
        ),
    ];
    for (variable, value, key, said) in cases {
        let err = load_in(dir.path(), None, &[(variable, value)]).unwrap_err();
        assert_eq!(err.key(), Some(key), "{variable}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(key) && text.contains(said),
            "{variable}: {text}"
        );
    }
}

#[test]
fn a_refused_secret_is_not_shown() {
    let dir = dir_with(&[("default.toml", "")]);
    let err = load_in(
        dir.path(),
        None,
        &[("AETHER__AETHER__HOPPING__SECRET", "too-short")],
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("aether.hopping.secret"));
    assert!(!err.to_string().contains("too-short"), "{err}");
}

/// Every variable the documentation names is one this loader reads: the
/// names in README.md, the user guide, config/default.toml and this
/// crate's README that
/// set a section of [`Program`] load without an unknown key. The aether's
/// section is `[aether]`, so its variables start `AETHER__AETHER__`; the
/// single-prefix form names no section and is refused.
#[test]
fn the_documented_variables_are_the_ones_read() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let guide = format!("{root}/docs/guide");
    let mut docs: Vec<String> = [
        "README.md",
        "config/default.toml",
        "aether-core/ops/README.md",
    ]
    .map(String::from)
    .to_vec();
    for entry in std::fs::read_dir(&guide).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            docs.push(format!("docs/guide/{name}"));
        }
    }
    let dir = dir_with(&[("default.toml", "")]);
    let sections = ["aether", "log", "telemetry", "service", "resources"];
    let mut checked = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(format!("{root}/{doc}")).unwrap();
        for (start, _) in text.match_indices(VARIABLE_PREFIX) {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let key = name[VARIABLE_PREFIX.len()..].to_ascii_lowercase();
            let section = key.split("__").next().unwrap_or_default();
            // Placeholders (AETHER__<SECTION>__<KEY>), bare prefixes
            // (AETHER__AETHER__) and other programs' sections.
            if !sections.contains(&section) || !key.contains("__") || key.ends_with('_') {
                continue;
            }
            // A value of the right type is not needed: an unknown key is
            // refused before any value is read.
            if let Err(err) = load_in(dir.path(), None, &[(&name, "0123456789abcdef0123")]) {
                assert_ne!(
                    err.kind(),
                    SettingsErrorKind::UnknownKey,
                    "{doc} names {name}: {err}"
                );
            }
            checked.push(name);
        }
    }
    for doc_says in ["docs/guide/hopping.md", "config/default.toml"] {
        let text = std::fs::read_to_string(format!("{root}/{doc_says}")).unwrap();
        assert!(
            text.contains("AETHER__AETHER__HOPPING__SECRET"),
            "{doc_says} names the secret's variable"
        );
    }
    assert!(
        checked
            .iter()
            .any(|n| n == "AETHER__AETHER__HOPPING__SECRET"),
        "{checked:?}"
    );
    let secret = "0123456789abcdef0123";
    let program = load_in(
        dir.path(),
        None,
        &[("AETHER__AETHER__HOPPING__SECRET", secret)],
    )
    .unwrap();
    assert_eq!(
        program.aether.hopping.secret.as_ref().map(|s| s.expose()),
        Some(secret)
    );
    let err = load_in(dir.path(), None, &[("AETHER__HOPPING__SECRET", secret)]).unwrap_err();
    assert_eq!(
        (err.kind(), err.key()),
        (SettingsErrorKind::UnknownKey, Some("hopping"))
    );
}

#[test]
fn the_state_section_reads_milliseconds_and_names_a_bad_key() {
    let dir = dir_with(&[(
        "default.toml",
        "[aether.state]\nanti_entropy_interval_ms = 250\ndir = \"/var/lib/x\"\nsync_writes = true\n",
    )]);
    let program = load_in(dir.path(), None, &[]).unwrap();
    let state = &program.aether.state;
    assert_eq!(
        state.anti_entropy_interval,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(state.dir.as_deref(), Some(Path::new("/var/lib/x")));
    assert!(state.sync_writes);

    let err = load_in(
        dir.path(),
        None,
        &[("AETHER__AETHER__STATE__PRESENCE_TIMEOUT_MS", "10")],
    )
    .unwrap_err();
    assert_eq!(err.kind(), SettingsErrorKind::Invalid);
    assert_eq!(err.key(), Some("aether.state.presence_timeout_ms"), "{err}");
}

#[test]
fn a_program_takes_its_own_service_settings_over_the_shared_ones() {
    let dir = dir_with(&[(
        "default.toml",
        "[service]\nrate_limit_per_s = 500\nnoise_floor = 0.1\n\
         [service.programs.beta]\nrate_limit_per_s = 50\nrate_limit_wait_ms = 0\n",
    )]);
    let program = load_in(dir.path(), None, &[]).unwrap();
    let beta = program.service.for_program("beta");
    assert_eq!(
        (
            beta.rate_limit_per_s,
            beta.rate_limit_wait_ms,
            beta.noise_floor
        ),
        (Some(50.0), 0, 0.1)
    );
    let alpha = program.service.for_program("alpha");
    assert_eq!(
        (alpha.rate_limit_per_s, alpha.rate_limit_wait_ms),
        (Some(500.0), 10_000)
    );
    // A bad value in a program's own section is named with its path.
    let dir = dir_with(&[(
        "default.toml",
        "[service.programs.beta]\nrate_limit_per_s = 0\n",
    )]);
    let err = load_in(dir.path(), None, &[]).unwrap_err().to_string();
    assert!(
        err.contains("service.programs.beta.rate_limit_per_s"),
        "{err}"
    );
    // So is an unknown key there.
    let dir = dir_with(&[("default.toml", "[service.programs.beta]\nrate_limit = 5\n")]);
    let err = load_in(dir.path(), None, &[]).unwrap_err().to_string();
    assert!(err.contains("rate_limit"), "{err}");
}
