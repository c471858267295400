//! DynamoDB: the bare AWS SDK sending the store's requests.

use crate::bench::report::{Baseline, Workload};

/// The bare AWS SDK (the store's client configuration) sending the very
/// requests the store's common path sends: the same expressions, names and
/// values.
pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
    let store = atomic_store::dynamodb::DynamoStore::open(url).map_err(|e| e.to_string())?;
    let client = store.sdk_client().await.map_err(|e| e.to_string())?;
    let table = store.table().to_owned();
    let run = format!("bench-raw-{}-{concurrency}", std::process::id());
    let n = |v: i64| AttributeValue::N(v.to_string());
    let counter = |update: &'static str, condition: &'static str| {
        let (client, table) = (client.clone(), table.clone());
        let key = AttributeValue::S(format!("{run}-counter"));
        move |_: u32, _: u64| {
            let (client, table, key) = (client.clone(), table.clone(), key.clone());
            async move {
                client
                    .update_item()
                    .table_name(table)
                    .key("k", key)
                    .update_expression(update)
                    .condition_expression(condition)
                    // TODO(#13): send the library's own request text
                    .expression_attribute_names("#n", "n")
                    .expression_attribute_names("#k", "k")
                    .expression_attribute_names("#e", "exp")
                    .expression_attribute_values(":zero", n(-1))
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":max", n(i64::MAX - 1))
                    .expression_attribute_values(":now", n(super::now_ms()))
                    .return_values(ReturnValue::UpdatedNew)
                    .send()
                    .await
                    .is_ok()
            }
        }
    };
    let (name, ops) = match workload {
        Workload::Incr => (
            "bare aws-sdk-dynamodb UpdateItem loop, the store's incr request",
            super::request_loop(
                concurrency,
                duration,
                // TODO(#13): send the library's own request text
                counter(
                    "SET #n = if_not_exists(#n, :zero) + :one",
                    "attribute_not_exists(#k) OR (#n < :max AND (attribute_not_exists(#e) OR #e > :now))",
                ),
            )
            .await,
        ),
        Workload::Nonce => (
            "bare aws-sdk-dynamodb UpdateItem loop, the store's assign_nonce request",
            super::request_loop(
                concurrency,
                duration,
                // TODO(#13): send the library's own request text
                counter(
                    "SET #n = if_not_exists(#n, :zero) + :one",
                    "attribute_not_exists(#k) OR (#n BETWEEN :zero AND :max AND (attribute_not_exists(#e) OR #e > :now))",
                ),
            )
            .await,
        ),
        Workload::Lock => {
            let ops = super::request_loop(concurrency, duration, move |task, _| {
                let (client, table) = (client.clone(), table.clone());
                let key = AttributeValue::S(format!("{run}-lock-{task}"));
                async move {
                    let now = super::now_ms();
                    let id = AttributeValue::S(format!("{:032x}", now));
                    let taken = client
                        .update_item()
                        .table_name(&table)
                        .key("k", key.clone())
                        // TODO(#13): send the library's own request text
                        .update_expression("SET #v = :id, #e = :exp, #t = :ttl, #f = if_not_exists(#f, :floor) + :one REMOVE #n")
                        .condition_expression("(attribute_not_exists(#v) AND attribute_not_exists(#n)) OR #e <= :takeover")
                        .expression_attribute_names("#v", "v")
                        .expression_attribute_names("#n", "n")
                        .expression_attribute_names("#e", "exp")
                        .expression_attribute_names("#t", "ttl")
                        .expression_attribute_names("#f", "f")
                        .expression_attribute_values(":id", id.clone())
                        .expression_attribute_values(":exp", n(now + 30_000))
                        .expression_attribute_values(":ttl", n(now / 1000 + 92))
                        .expression_attribute_values(":floor", n(now * 1000))
                        .expression_attribute_values(":one", n(1))
                        .expression_attribute_values(":takeover", n(now - 1000))
                        .return_values(ReturnValue::UpdatedNew)
                        .send()
                        .await
                        .is_ok();
                    taken
                        && client
                            .update_item()
                            .table_name(&table)
                            .key("k", key)
                            // TODO(#13): send the library's own request text
                            .update_expression("REMOVE #v, #e SET #t = :ttl")
                            .condition_expression("#v = :id")
                            .expression_attribute_names("#v", "v")
                            .expression_attribute_names("#e", "exp")
                            .expression_attribute_names("#t", "ttl")
                            .expression_attribute_values(":id", id)
                            .expression_attribute_values(":ttl", n(now / 1000 + 62))
                            .return_values(ReturnValue::AllOld)
                            .send()
                            .await
                            .is_ok()
                }
            })
            .await;
            ("bare aws-sdk-dynamodb loop, the store's take + release requests", ops)
        }
        _ => return Err("the raw DynamoDB baseline covers incr, nonce and lock".into()),
    };
    Ok(super::bare_client(name, concurrency, ops))
}
