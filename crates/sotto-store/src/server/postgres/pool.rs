//! Connections: a small pool, each connection with its prepared
//! statements (one round trip per statement once prepared).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::super::{Result, StoreError};

/// Statement parameters.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
    /// Inside a transaction: a connection dropped in this state (its task
    /// was abandoned) is closed, never lent again.
    pub in_tx: bool,
}

impl Conn {
    async fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    pub async fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let s = self.statement(sql).await?;
        Ok(self.client.query(&s, params).await?)
    }

    pub async fn opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        let s = self.statement(sql).await?;
        Ok(self.client.query_opt(&s, params).await?)
    }

    pub async fn one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        let s = self.statement(sql).await?;
        Ok(self.client.query_one(&s, params).await?)
    }

    pub async fn exec(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let s = self.statement(sql).await?;
        Ok(self.client.execute(&s, params).await?)
    }

    /// Statements without parameters, unprepared (BEGIN, DDL).
    pub async fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }
}

/// Opens one connection, driving it on the current runtime.
pub(crate) async fn connect(config: &tokio_postgres::Config) -> Result<Conn> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %super::reason(&e), "database connection lost");
        }
    });
    Ok(Conn {
        client,
        prepared: HashMap::new(),
        in_tx: false,
    })
}

/// As [`connect`], creating the database first if it does not exist (a
/// fresh deployment: `sotto admin migrate` or the first node's start).
pub(crate) async fn connect_creating(config: &tokio_postgres::Config) -> Result<Conn> {
    match connect(config).await {
        Err(StoreError::Postgres(e)) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            let name = config.get_dbname().unwrap_or_default().to_owned();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(StoreError::Postgres(e));
            }
            let mut admin = config.clone();
            admin.dbname("postgres");
            let mut conn = connect(&admin).await?;
            match conn.batch(&format!("CREATE DATABASE \"{name}\"")).await {
                Ok(()) => tracing::info!(database = %name, "database created"),
                // Another node made it at the same moment.
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
                Err(e) => return Err(e.into()),
            }
            connect(config).await
        }
        other => other,
    }
}

/// At most `size` connections, opened on demand and kept while healthy.
pub(crate) struct Pool {
    config: tokio_postgres::Config,
    idle: Arc<Mutex<Vec<Conn>>>,
    permits: Arc<Semaphore>,
    /// What the pool serves (in the error of a wait that ran out).
    name: &'static str,
}

/// Longest wait for a free connection: a node whose connections are all
/// busy answers "busy" instead of hanging.
pub(crate) const ACQUIRE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A connection lent by the pool; back to the pool on drop unless closed.
pub(crate) struct Pooled {
    conn: Option<Conn>,
    idle: Arc<Mutex<Vec<Conn>>>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(config: tokio_postgres::Config, size: usize, name: &'static str) -> Pool {
        Pool {
            config,
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(size)),
            name,
        }
    }

    /// A connection, waiting at most [`ACQUIRE_WAIT`] for one to be free.
    pub async fn get(&self) -> Result<Pooled> {
        self.get_within(ACQUIRE_WAIT).await
    }

    pub async fn get_within(&self, wait: std::time::Duration) -> Result<Pooled> {
        let permit = match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(StoreError::Backend("the store is closed".into())),
            Err(_) => {
                return Err(StoreError::Busy(format!(
                    "no {} connection free within {} s",
                    self.name,
                    wait.as_secs()
                )))
            }
        };
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) if !c.client.is_closed() => c,
            _ => connect(&self.config).await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            idle: self.idle.clone(),
            _permit: permit,
        })
    }
}

impl Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until drop")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() && !conn.in_tx {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
            }
        }
    }
}
