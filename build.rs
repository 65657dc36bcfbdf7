//! Compiles `proto/` with a pure-Rust protobuf compiler (protox), so a build
//! needs no system `protoc`. The file descriptor set is kept for server
//! reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/eventhub/v1/eventhub.proto";
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("eventhub_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
