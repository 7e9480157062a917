#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rackboot::fuzzing::dns(data));
