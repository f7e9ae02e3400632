//! The bare byte-copying forwarder the benchmarks compare against: the
//! practical limit for any proxy on a machine (`FIELD-NOTES.md`, "Peers").
//! Usage: pgbranch-bench-forwarder LISTEN_ADDR UPSTREAM_ADDR

use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:6433".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:5432".into());
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (mut client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            if let Ok(mut server) = TcpStream::connect(&upstream).await {
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}
