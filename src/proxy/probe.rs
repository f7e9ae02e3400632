//! The proxy's own SQL connections for background work (drift checks,
//! history retention): one connection to a database as the upstream URL's
//! user, over the same transport (TCP, Unix socket, TLS) sessions use.
//! Background work runs only when configured (DESIGN.md, "No privilege
//! escalation").

use super::ProxyContext;

/// A connected client; its connection task ends when it is dropped.
pub struct Probe {
    pub client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Probe {
    /// Connects to `database` as the upstream URL's user.
    pub async fn connect(ctx: &ProxyContext, database: &str) -> Result<Probe, String> {
        let stream = ctx.connector.connect().await.map_err(|e| e.to_string())?;
        let mut cfg = ctx.connector.target.probe.clone();
        cfg.dbname(database)
            .application_name("pgbranch background")
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, conn) = cfg
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Probe {
            client,
            driver: tokio::spawn(conn),
        })
    }

    /// Closes the connection and waits for it to end.
    pub async fn close(self) {
        drop(self.client);
        let _ = self.driver.await;
    }
}
