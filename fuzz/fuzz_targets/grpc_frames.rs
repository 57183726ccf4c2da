#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rampart_fuzz::grpc_frames(data));
