//! The one connection type the server's own tables are reached through, on SQLite or on
//! PostgreSQL: the database `--db` names holds both the run store and these tables.
//!
//! A small layer with the shape of rusqlite's API (`execute`, `query_row`, `prepare` then
//! `query_map`, rows read with `get`), so that each query is written once in the SQL both
//! databases speak: numbered parameters (`?1`, rewritten to `$1` for PostgreSQL), `ON CONFLICT`,
//! `RETURNING`, integers as 64-bit. Rows are read into plain values first, so a closure that
//! reads a row does not know which database it came from. Each backend has its own migrations.

use std::time::Duration;

use bytes::BytesMut;
use salt_runtime::pg::Pg;
use salt_runtime::pg::tokio_postgres;
use tokio_postgres::types::{IsNull, ToSql, Type};

/// What a query on the server's tables can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite said no.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no.
    #[error("{}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A query meant to return one row returned none.
    #[error("the query returned no rows")]
    NoRows,
    /// A column did not hold the type asked for.
    #[error("column {column}: {message}")]
    Type {
        /// The column's index.
        column: usize,
        /// What was found.
        message: String,
    },
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl Error {
    /// Whether a uniqueness (or other) constraint refused the write.
    pub fn is_constraint(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => e.code == rusqlite::ErrorCode::ConstraintViolation,
            Error::Postgres(e) => e.code().is_some_and(|c| c.code().starts_with("23")),
            _ => false,
        }
    }
}

/// The result of a query.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A value given to or read from a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// SQL NULL.
    Null,
    /// An integer (booleans are stored as 0 and 1).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl From<$t> for Param {
            fn from(v: $t) -> Self {
                Param::Int(v as i64)
            }
        }
    )*};
}
int_param!(i64, i32, u32, u16, usize);

impl From<bool> for Param {
    fn from(v: bool) -> Self {
        Param::Int(i64::from(v))
    }
}
impl From<f64> for Param {
    fn from(v: f64) -> Self {
        Param::Real(v)
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(v)
    }
}
impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Param::Text(v.clone())
    }
}
impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(v.to_string())
    }
}
impl From<&&str> for Param {
    fn from(v: &&str) -> Self {
        Param::Text(v.to_string())
    }
}
impl From<Vec<u8>> for Param {
    fn from(v: Vec<u8>) -> Self {
        Param::Blob(v)
    }
}
impl From<&[u8]> for Param {
    fn from(v: &[u8]) -> Self {
        Param::Blob(v.to_vec())
    }
}
impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}
impl<T: Clone + Into<Param>> From<&Option<T>> for Param {
    fn from(v: &Option<T>) -> Self {
        v.clone().map_or(Param::Null, Into::into)
    }
}
impl From<&i64> for Param {
    fn from(v: &i64) -> Self {
        Param::Int(*v)
    }
}

/// The parameters of a query: `()`, an array of values, or [`params!`].
pub trait Params {
    /// The values, in order.
    fn into_params(self) -> Vec<Param>;
}

impl Params for () {
    fn into_params(self) -> Vec<Param> {
        Vec::new()
    }
}
impl Params for Vec<Param> {
    fn into_params(self) -> Vec<Param> {
        self
    }
}
impl<T: Into<Param>, const N: usize> Params for [T; N] {
    fn into_params(self) -> Vec<Param> {
        self.into_iter().map(Into::into).collect()
    }
}

/// The parameters of a query, of any types that convert to [`Param`].
#[macro_export]
macro_rules! params {
    ($($p:expr),* $(,)?) => { vec![$($crate::sql::Param::from(($p).clone())),*] };
}
pub use params;

/// A row read from a query.
#[derive(Debug, Clone)]
pub struct Row {
    values: Vec<Param>,
}

/// A type a column can be read as.
pub trait FromParam: Sized {
    /// Reads `value` (of column `column`).
    fn from_param(value: &Param, column: usize) -> Result<Self>;
}

fn type_error(column: usize, want: &str, found: &Param) -> Error {
    Error::Type { column, message: format!("expected {want}, found {found:?}") }
}

impl FromParam for i64 {
    fn from_param(value: &Param, column: usize) -> Result<Self> {
        match value {
            Param::Int(n) => Ok(*n),
            other => Err(type_error(column, "an integer", other)),
        }
    }
}
impl FromParam for u32 {
    fn from_param(value: &Param, column: usize) -> Result<Self> {
        let n = i64::from_param(value, column)?;
        u32::try_from(n).map_err(|_| type_error(column, "an unsigned 32-bit integer", value))
    }
}
impl FromParam for u16 {
    fn from_param(value: &Param, column: usize) -> Result<Self> {
        let n = i64::from_param(value, column)?;
        u16::try_from(n).map_err(|_| type_error(column, "an unsigned 16-bit integer", value))
    }
}
impl FromParam for bool {
    fn from_param(value: &Param, column: usize) -> Result<Self> {
        Ok(i64::from_param(value, column)? != 0)
    }
}
impl FromParam for f64 {
    fn from_param(value: &Param, column: usize) -> Result<Self> {
        match value {
            Param::Real(x) => Ok(*x),
            Param::Int(n) => Ok(*n as f64),
            other => Err(type_error(column, "a number", other)),
        }
    }
}
impl FromParam for String {
    fn from_param(value: &Param, column: usize) -> Result<Self> {
        match value {
            Param::Text(s) => Ok(s.clone()),
            other => Err(type_error(column, "text", other)),
        }
    }
}
impl FromParam for Vec<u8> {
    fn from_param(value: &Param, column: usize) -> Result<Self> {
        match value {
            Param::Blob(b) => Ok(b.clone()),
            Param::Text(s) => Ok(s.clone().into_bytes()),
            other => Err(type_error(column, "bytes", other)),
        }
    }
}
impl<T: FromParam> FromParam for Option<T> {
    fn from_param(value: &Param, column: usize) -> Result<Self> {
        match value {
            Param::Null => Ok(None),
            v => T::from_param(v, column).map(Some),
        }
    }
}

impl Row {
    /// Column `i` as a `T`.
    pub fn get<T: FromParam>(&self, i: usize) -> Result<T> {
        let value = self.values.get(i).ok_or_else(|| Error::Type { column: i, message: "no such column".into() })?;
        T::from_param(value, i)
    }
}

/// `optional()` on a one-row result: `Ok(None)` when there was no row.
pub trait OptionalExtension<T> {
    /// The row, or `None` when the query returned none.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which database a [`Conn`] talks to.
enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

/// A connection to the database that holds the server's tables.
pub struct Conn {
    backend: Backend,
    /// In a transaction: a closed connection is an error, not a new connection on which the
    /// rest of the transaction would run outside it.
    in_transaction: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Sqlite(_) => f.write_str("Conn(sqlite)"),
            Backend::Postgres(pg) => write!(f, "Conn({pg:?})"),
        }
    }
}

/// Whether `db` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres(db: &str) -> bool {
    let lower = db.get(..13).unwrap_or(db).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl Conn {
    fn of(backend: Backend) -> Self {
        Conn { backend, in_transaction: std::sync::atomic::AtomicBool::new(false) }
    }

    /// Runs `f` on the PostgreSQL connection: on the same connection within a transaction.
    fn on_pg<R>(
        &self,
        pg: &Pg,
        f: impl for<'c> FnOnce(&'c mut salt_runtime::pg::Session) -> futures::future::BoxFuture<'c, Result<R>>,
    ) -> Result<R> {
        if self.in_transaction.load(std::sync::atomic::Ordering::Relaxed) { pg.with_same(f) } else { pg.with(f) }
    }

    /// Opens the database `db` names: a PostgreSQL URL, or a SQLite file (a path or
    /// `sqlite://PATH`). Does not migrate.
    pub fn open(db: &str) -> Result<Self> {
        if is_postgres(db) {
            return Ok(Conn::of(Backend::Postgres(Box::new(Pg::connect(db, 1)?))));
        }
        let path = db.strip_prefix("sqlite://").unwrap_or(db);
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // As the run store by default: a commit survives the process being killed (WAL),
        // without waiting for the disk at each one.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Conn::of(Backend::Sqlite(conn)))
    }

    /// A connection on an open SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Self {
        Conn::of(Backend::Sqlite(conn))
    }

    /// A new, empty SQLite database in memory (tests).
    pub fn memory() -> Result<Self> {
        Ok(Conn::sqlite(rusqlite::Connection::open_in_memory()?))
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Milliseconds since the Unix epoch by the database's clock, to compare with the expiries
    /// of leases and places that every host writes (on SQLite, one host: its clock).
    pub fn now_ms(&self) -> i64 {
        if self.is_postgres() { salt_runtime::pg::now_ms() } else { salt_runtime::model::now_ms() }
    }

    /// Runs SQL statements without parameters or results.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(pg) => {
                let sql = sql.to_string();
                self.on_pg(pg, move |c| Box::pin(async move { Ok(c.batch_execute(&sql).await?) }))
            }
        }
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        let params = params.into_params();
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute(sql, rusqlite::params_from_iter(params.iter().map(to_sqlite)))?),
            Backend::Postgres(pg) => {
                let sql = numbered(sql);
                let n = self.on_pg(pg, move |c| {
                    Box::pin(async move {
                        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                        let statement = c.prepared(&sql).await?;
                        Ok(c.execute(&statement, &refs).await?)
                    })
                })?;
                Ok(n as usize)
            }
        }
    }

    /// Every row of a query.
    pub fn query(&self, sql: &str, params: impl Params) -> Result<Vec<Row>> {
        let params = params.into_params();
        match &self.backend {
            Backend::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut values = Vec::with_capacity(columns);
                    for i in 0..columns {
                        values.push(from_sqlite(r.get_ref(i)?));
                    }
                    out.push(Row { values });
                }
                Ok(out)
            }
            Backend::Postgres(pg) => {
                let sql = numbered(sql);
                let rows = self.on_pg(pg, move |c| {
                    Box::pin(async move {
                        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                        let statement = c.prepared(&sql).await?;
                        Ok(c.query(&statement, &refs).await?)
                    })
                })?;
                rows.iter().map(from_pg_row).collect()
            }
        }
    }

    /// The first row of a query, read by `f`; [`Error::NoRows`] when there is none.
    pub fn query_row<T>(&self, sql: &str, params: impl Params, f: impl FnOnce(&Row) -> Result<T>) -> Result<T> {
        let rows = self.query(sql, params)?;
        rows.first().ok_or(Error::NoRows).and_then(f)
    }

    /// A query to run with [`Statement::query_map`].
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement { conn: self, sql: sql.to_string() })
    }

    /// Runs `f` in one transaction (`BEGIN IMMEDIATE` on SQLite): committed when it returns
    /// `Ok`, rolled back otherwise.
    pub fn transaction<T, E: From<Error>>(&self, f: impl FnOnce(&Conn) -> Result<T, E>) -> Result<T, E> {
        let begin = if self.is_postgres() { "BEGIN" } else { "BEGIN IMMEDIATE" };
        self.execute_batch(begin)?;
        self.in_transaction.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = match f(self) {
            Ok(v) => match self.execute_batch("COMMIT") {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = self.execute_batch("ROLLBACK");
                    Err(e.into())
                }
            },
            Err(e) => {
                let _ = self.execute_batch("ROLLBACK");
                Err(e)
            }
        };
        self.in_transaction.store(false, std::sync::atomic::Ordering::Relaxed);
        result
    }
}

/// A query, run by [`Statement::query_map`].
pub struct Statement<'c> {
    conn: &'c Conn,
    sql: String,
}

impl Statement<'_> {
    /// Each row of the query, read by `f`.
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        mut f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.conn.query(&self.sql, params)?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }
}

/// `?N` placeholders as PostgreSQL's `$N` (outside string literals).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

fn to_sqlite(p: &Param) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match p {
        Param::Null => Value::Null,
        Param::Int(n) => Value::Integer(*n),
        Param::Real(x) => Value::Real(*x),
        Param::Text(s) => Value::Text(s.clone()),
        Param::Blob(b) => Value::Blob(b.clone()),
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Param {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Param::Null,
        ValueRef::Integer(n) => Param::Int(n),
        ValueRef::Real(x) => Param::Real(x),
        ValueRef::Text(t) => Param::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Param::Blob(b.to_vec()),
    }
}

fn from_pg_row(row: &tokio_postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map_or(Param::Null, Param::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?.map_or(Param::Null, |n| Param::Int(n.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?.map_or(Param::Null, |n| Param::Int(n.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?.map_or(Param::Null, |b| Param::Int(b.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map_or(Param::Null, Param::Real)
        } else if *ty == Type::FLOAT4 {
            row.try_get::<_, Option<f32>>(i)?.map_or(Param::Null, |x| Param::Real(x.into()))
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)?.map_or(Param::Null, Param::Blob)
        } else if *ty == Type::JSON || *ty == Type::JSONB {
            row.try_get::<_, Option<serde_json::Value>>(i)?.map_or(Param::Null, |v| Param::Text(v.to_string()))
        } else {
            row.try_get::<_, Option<String>>(i)?.map_or(Param::Null, Param::Text)
        };
        values.push(value);
    }
    Ok(Row { values })
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || format!("cannot store {self:?} in a column of type {ty}").into();
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                Type::FLOAT8 => (*n as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => n.to_string().to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Param::Real(x) => match *ty {
                Type::FLOAT8 => x.to_sql(ty, out),
                Type::FLOAT4 => (*x as f32).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Param::Text(s) => match *ty {
                Type::JSON | Type::JSONB => serde_json::from_str::<serde_json::Value>(s)?.to_sql(ty, out),
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.to_sql(ty, out),
            },
            Param::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_strings() {
        assert_eq!(numbered("SELECT ?1, '?', ?2 WHERE x = '??'"), "SELECT $1, '?', $2 WHERE x = '??'");
    }

    #[test]
    fn a_postgres_url_is_told_from_a_path() {
        assert!(is_postgres("postgres://u@h/db"));
        assert!(is_postgres("PostgreSQL://u@h/db"));
        assert!(!is_postgres("sqlite://x.db"));
        assert!(!is_postgres("postgres.db"));
    }
}
