//! Every fuzz target's corpus (`fuzz/corpus/<target>/`) and every input that
//! once crashed one (`fuzz/regressions/<target>/`), replayed through the same
//! library function the fuzzer calls (`rackboot::fuzzing`). A crash the
//! fuzzer found stays a `cargo test` failure until the parser is fixed, and
//! the corpus keeps proving the parsers total without a nightly toolchain.
//!
//! No sockets, no server: each input takes microseconds; the whole replay
//! takes seconds.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable corpus folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every file of `kind` (`corpus` or `regressions`) through its target;
/// fails naming each input that panicked, with the panic and its bytes.
fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    let mut failed = Vec::new();
    let mut count = 0;
    for (name, target) in rackboot::fuzzing::TARGETS {
        for path in files(&root.join(name)) {
            let data = std::fs::read(&path).expect("a readable corpus file");
            count += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failed.push(format!(
                    "{}: {why}\n    input: {:02x?}",
                    path.display(),
                    &data[..data.len().min(256)]
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {count} {kind} inputs panic (reproduce one with `cargo +nightly fuzz run \
         --sanitizer none <target> <file>`):\n{}",
        failed.len(),
        failed.join("\n")
    );
    count
}

/// Removes the scratch folders of the `bootenv` target when the test ends, failed or not.
struct Scratch;

impl Drop for Scratch {
    fn drop(&mut self) {
        rackboot::fuzzing::remove_scratch();
    }
}

/// One test, not two: the targets share their scratch folders within the process.
#[test]
fn every_corpus_input_and_every_past_crash_replays_without_a_panic() {
    let _scratch = Scratch;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in rackboot::fuzzing::TARGETS {
        assert!(
            root.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{name}.rs is missing for rackboot::fuzzing::{name}"
        );
        assert!(
            !files(&root.join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name}/ is empty: seed it (python3 fuzz/seeds.py, then .ci/fuzz --cmin)"
        );
    }
    replay("corpus");
    assert!(
        replay("regressions") > 0,
        "fuzz/regressions/ holds no input"
    );
}
