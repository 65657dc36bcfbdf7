//! Compiles `proto/` with a pure-Rust protobuf compiler (protox), so a build
//! needs no system `protoc`. The file descriptor set is kept for server
//! reflection. It also tells Cargo to rebuild when a migration is added,
//! since `sqlx::migrate!` embeds the `migrations/` directory.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/eventhub/v1/eventhub.proto";
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
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
