//! Presigned GETs of blobs: the artifact server's redirects hand them to clients, which
//! then read the bytes from the store itself.

use artifactstore_model::Digest;
use artifactstore_model::secret::Secret;
use aws_sdk_s3::presigning::PresigningConfig;

use super::S3BlobStore;
use crate::{Error, PresignOptions, Result};

impl S3BlobStore {
    /// Signed through the store's own client, so with the credential its cache holds now
    /// (temporary ones included: the URL then works no longer than that credential, which
    /// the cache renews well before it expires). Signing makes no request.
    pub(super) async fn presign_get(
        &self,
        digest: &Digest,
        opts: &PresignOptions,
    ) -> Result<Secret> {
        let key = self.key(digest);
        let config = PresigningConfig::expires_in(opts.expires_in)
            .map_err(|e| Error::Config(format!("presigned URL expiry: {e}")))?;
        let mut req = self.client.get_object().bucket(&self.bucket).key(&key);
        if let Some(t) = &opts.content_type {
            req = req.response_content_type(t);
        }
        if let Some(d) = &opts.content_disposition {
            req = req.response_content_disposition(d);
        }
        // The error names the key and the store's reason, never the URL: there is none yet.
        let presigned = req
            .presigned(config)
            .await
            .map_err(|e| self.err("presign GetObject", Some(&key), e))?;
        Ok(Secret::new(presigned.uri()))
    }
}
