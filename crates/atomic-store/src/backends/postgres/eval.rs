//! `eval`: one SQL statement in a transaction, its rows as `EvalValue`s.

use super::*;

pub(super) fn column_value(row: &Row, i: usize) -> EvalValue {
    let ty = row.columns()[i].type_().clone();
    let value = match ty {
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map(|v| v.map(|n| EvalValue::Integer(n.into()))),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|n| EvalValue::Integer(n.into()))),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map(|v| v.map(EvalValue::Integer)),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map(|v| v.map(|b| EvalValue::Integer(b.into()))),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map(|v| v.map(|f| EvalValue::Text(f.to_string()))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map(|v| v.map(|f| EvalValue::Text(f.to_string()))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => row
            .try_get::<_, Option<String>>(i)
            .map(|v| v.map(EvalValue::Text)),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map(|v| v.map(EvalValue::Bytes)),
        other => {
            return EvalValue::Error(format!(
                "column {} has type {other}; cast it to text in the statement",
                row.columns()[i].name()
            ))
        }
    };
    match value {
        Ok(Some(v)) => v,
        Ok(None) => EvalValue::Nil,
        Err(e) => EvalValue::Error(e.to_string()),
    }
}

pub(super) async fn run_eval(
    client: &mut Client,
    script: &str,
    keys: &[String],
    args: &[String],
) -> std::result::Result<Vec<Row>, Failure<PgFailure>> {
    let db = |e: tokio_postgres::Error| classify(e.into());
    let tx = client.transaction().await.map_err(db)?;
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    sorted.dedup();
    for key in sorted {
        tx.query_typed(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[(key, Type::TEXT)],
        )
        .await
        .map_err(db)?;
    }
    let params: Vec<(&(dyn ToSql + Sync), Type)> = keys
        .iter()
        .chain(args)
        .map(|v| (v as &(dyn ToSql + Sync), Type::TEXT))
        .collect();
    let rows = tx.query_typed(script, &params).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(rows)
}
