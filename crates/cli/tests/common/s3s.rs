//! s3s-fs (an S3 API over a temp directory, with real SigV4 checks) on 127.0.0.1:0, for
//! tests that need an S3 store without a live one.

use hyper_util::rt::{TokioExecutor, TokioIo};

use artifactstore_model::Digest;

pub struct InProcessS3 {
    pub addr: std::net::SocketAddr,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    /// The store's files: `<root>/<bucket>/<key>`.
    pub root: tempfile::TempDir,
}

impl InProcessS3 {
    /// Starts the server with one bucket; the key pair is derived from `seed`. Call it
    /// inside a Tokio runtime: the server runs on it.
    pub async fn start(bucket: &str, seed: &str) -> InProcessS3 {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(bucket)).unwrap();
        let key_id = format!("AK{}", &Digest::of(seed.as_bytes()).hex()[..16]);
        let secret = format!("SK{}", &Digest::of(key_id.as_bytes()).hex()[..32]);
        let mut service =
            s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(root.path()).unwrap());
        service.set_auth(s3s::auth::SimpleAuth::from_single(
            key_id.clone(),
            secret.clone(),
        ));
        let service = service.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(conn);
            }
        });
        InProcessS3 {
            addr,
            bucket: bucket.to_owned(),
            key_id,
            secret,
            root,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}
