//! The HTTP edge both servers share, so the artifact server and the vend server
//! refuse hostile clients the same way.
