//! `artifactstore token new`: a static bearer token for `[[auth.tokens]]`, printed once.
//! The server's configuration keeps only its SHA-256, so the token exists nowhere but
//! in this output and wherever its holder puts it.

use artifactstore_server::auth::new_token;

pub fn token_new(name: &str, json: bool) -> anyhow::Result<u8> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\'),
        "--name must be 1 to 64 printable ASCII characters, without spaces, quotes or backslashes"
    );
    let (token, sha256) = new_token();
    if json {
        println!(
            "{}",
            serde_json::json!({ "name": name, "token": token.expose(), "sha256": sha256 })
        );
    } else {
        println!("token: {}", token.expose());
        println!();
        println!("# Give the token to its holder now: it is shown only this once.");
        println!("# Add this to the server's configuration and set its grants:");
        println!("[[auth.tokens]]");
        println!("name = \"{name}\"");
        println!("sha256 = \"{sha256}\"");
        println!("namespaces = [\"CHANGE-ME\"]");
        println!("permissions = [\"read\"]");
        println!("# expires = \"2027-01-01T00:00:00Z\"");
    }
    Ok(0)
}
