//! s3s-fs (an S3 API over a directory, with real SigV4 checks) as a server on loopback,
//! for `scripts/s3-fixture.sh s3s`: the same in-process store the S3 tests use, reachable
//! by other programs.
//!
//!   s3s_fs_server ROOT PORT KEY_ID_FILE SECRET_FILE
//!
//! Prints `listening http://127.0.0.1:PORT` once it accepts connections.

use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, port, key_file, secret_file] = args.as_slice() else {
        eprintln!("usage: s3s_fs_server ROOT PORT KEY_ID_FILE SECRET_FILE");
        std::process::exit(2);
    };
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_owned()
    };
    let fs = s3s_fs::FileSystem::new(root).expect("the root directory exists");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        read(key_file),
        read(secret_file),
    ));
    let service = builder.build();
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("a port")))
            .await
            .expect("bind");
    println!("listening http://{}", listener.local_addr().unwrap());
    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(conn);
    }
}
