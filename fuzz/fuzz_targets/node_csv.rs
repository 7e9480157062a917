#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rackboot::fuzzing::node_csv(data));
