//! Opening: the URL's parameters, TLS, the pool and the statements.

use super::*;

pub(super) fn identifier(url: &StoreUrl, what: &str, name: &str) -> Result<String> {
    Ok(format!("\"{}\"", url.sql_identifier(what, name)?))
}

pub(super) fn tls_config(url: &StoreUrl, root_file: Option<&str>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match root_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| url.error(format!("cannot read sslrootcert {path}: {e}")))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| url.error(format!("bad certificate in {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| url.error(format!("bad certificate in {path}: {e}")))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| url.error(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl PostgresStore {
    /// Open from a URL (see the module docs). Does not connect: the first
    /// operation does, and creates the schema if needed.
    pub fn open(url: &str) -> Result<Self> {
        let parsed = StoreUrl::parse(BACKEND, url, None)?;
        let redacted_url = parsed.redacted().to_owned();
        let base = url.split_once('?').map_or(url, |(base, _)| base);
        let param = |name: &str| parsed.param(name);
        let theirs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(parsed.others(OURS))
            .finish();
        // The serializer writes a space as `+`, which tokio-postgres would
        // keep as a `+` (`options=-c x=y` became `-c+x=y`); a `+` of the
        // value itself is already `%2B`.
        let theirs = theirs.replace('+', "%20");
        let sslmode = param("sslmode").unwrap_or("prefer");
        let passed_mode = match sslmode {
            "disable" | "prefer" | "require" => sslmode,
            "verify-ca" | "verify-full" => "require",
            other => {
                return Err(parsed.error(format!(
                    "sslmode `{other}`: use disable, prefer, require, verify-ca or verify-full"
                )))
            }
        };
        let pg_url = format!(
            "{base}?sslmode={passed_mode}{}{theirs}",
            if theirs.is_empty() { "" } else { "&" }
        );
        let mut config = tokio_postgres::Config::from_str(&pg_url).map_err(|e| {
            parsed.error(format!(
                "`{redacted_url}` is not a valid PostgreSQL URL: {e}"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let prefix = parsed.prefix()?;
        let schema_raw = param("schema").unwrap_or("public");
        let table_raw = param("table").unwrap_or("atomic_store");
        let schema = identifier(&parsed, "schema", schema_raw)?;
        let table = identifier(&parsed, "table", table_raw)?;
        let meta = identifier(&parsed, "table", &format!("{table_raw}_meta"))?;
        let index = identifier(&parsed, "table", &format!("{table_raw}_expires_at"))?;
        let pool_size = parsed.pool_size(16)?;
        let timeout = parsed.timeout(Duration::from_secs(5))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let (manager, transport) = if sslmode == "disable" {
            (
                Manager::from_config(config.clone(), tokio_postgres::NoTls, manager_config),
                Transport::Plain,
            )
        } else {
            let tls =
                tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&parsed, param("sslrootcert"))?);
            (
                Manager::from_config(config.clone(), tls.clone(), manager_config),
                Transport::Tls(tls),
            )
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(timeout))
            .create_timeout(config.get_connect_timeout().copied())
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| parsed.error(format!("cannot build the connection pool: {e}")))?;
        let qualified = format!("{schema}.{table}");
        let meta_q = format!("{schema}.{meta}");
        let in_schema = |suffix: &str| -> Result<String> {
            let name = identifier(&parsed, "table", &format!("{table_raw}{suffix}"))?;
            Ok(format!("{schema}.{name}"))
        };
        let names = sql::Names {
            table: qualified.clone(),
            fence: in_schema("_fence")?,
            queue: in_schema("_queue")?,
            enter: in_schema("_q_enter")?,
            release: in_schema("_q_release")?,
            purge: in_schema("_q_purge")?,
        };
        let r = |s: &str| sql::render(s, &names);
        let statements = Statements {
            incr: r(&sql::incr()),
            assign_nonce: r(&sql::assign_nonce()),
            acquire_lock: r(&sql::acquire_lock()),
            release_lock: r(&sql::release_lock()),
            extend_lock: r(&sql::extend_lock()),
            get: r(&sql::get()),
            set: r(&sql::set()),
            delete: r(&sql::delete()),
            set_if_absent: r(&sql::set_if_absent()),
            set_if_equal: r(&sql::set_if_equal()),
            purge_expired: r(&sql::purge_expired()),
            purge_queue: r(&sql::purge_queue()),
            purge: r(&sql::purge()),
            inspect: r(&sql::inspect()),
            keys: r(&sql::keys()),
            queue_enter: r(&sql::queue_enter()),
            queue_release: r(&sql::queue_release()),
            notify: sql::notify(),
        };
        let channel = listen::channel(table_raw);
        let listener = parsed
            .flag("listen", true)?
            .then(|| Arc::new(listen::Listener::new(channel.clone())));
        let schema_sql = format!(
            "{}\n{}",
            sql::schema(&qualified, &names.fence, &meta_q, &index),
            r(&sql::queue_schema())
        );
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                config,
                transport,
                listener,
                channel,
                timeout,
                schema_sql,
                schema_name: schema,
                meta: meta_q,
                qualified,
                sql: statements,
                ready: tokio::sync::OnceCell::new(),
                redacted_url,
            }),
            prefix,
        })
    }
}
