//! MongoDB: the bare driver sending the store's findOneAndUpdate requests.

use crate::bench::report::{Baseline, Workload};

/// The bare MongoDB driver (the store's client options) sending the very
/// findOneAndUpdate requests the store's common path sends.
pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    use mongodb::bson::doc;
    use mongodb::options::ReturnDocument;
    let store = atomic_store::mongodb::MongoStore::open(url).map_err(|e| e.to_string())?;
    let coll = store.driver_collection().await.map_err(|e| e.to_string())?;
    let run = format!("bench-raw-{}-{concurrency}", std::process::id());
    let (name, ops) = match workload {
        Workload::Incr | Workload::Nonce => {
            let key = format!("{run}-counter");
            coll.update_one(doc! {"_id": &key}, doc! {"$set": {"n": 0i64}})
                .upsert(true)
                .await
                .map_err(|e| e.to_string())?;
            let nonce = workload == Workload::Nonce;
            let ops = super::request_loop(concurrency, duration, move |_, _| {
                let (coll, key) = (coll.clone(), key.clone());
                async move {
                    let now = super::now_ms();
                    // incr: below i64::MAX; assign_nonce: inside the window.
                    // TODO(#13): send the library's own request text
                    let range = if nonce {
                        doc! {"n": {"$gte": -1i64, "$lte": i64::MAX - 1}}
                    } else {
                        doc! {"n": {"$lt": i64::MAX}}
                    };
                    let filter = doc! {"$and": [
                        {"_id": key},
                        {"v": {"$exists": false}},
                        range,
                        {"$or": [{"exp": {"$exists": false}}, {"exp": {"$gt": now}}]},
                    ]};
                    coll.find_one_and_update(filter, doc! {"$inc": {"n": 1i64}})
                        .return_document(ReturnDocument::After)
                        .await
                        .is_ok_and(|d| d.is_some())
                }
            })
            .await;
            let name = if nonce {
                "bare mongodb driver findOneAndUpdate loop, the store's assign_nonce request"
            } else {
                "bare mongodb driver findOneAndUpdate loop, the store's incr request"
            };
            (name, ops)
        }
        Workload::Lock => {
            let never = mongodb::bson::DateTime::from_millis(253_402_300_799_000);
            let ops = super::request_loop(concurrency, duration, move |task, round| {
                let coll = coll.clone();
                let key = format!("{run}-lock-{task}");
                async move {
                    if round == 0 {
                        let _ = coll
                            // TODO(#13): send the library's own request text
                            .update_one(doc! {"_id": &key}, doc! {"$max": {"gc": never}})
                            .upsert(true)
                            .await;
                    }
                    let now = super::now_ms();
                    let id = format!("{now:032x}");
                    // TODO(#13): send the library's own request text
                    let free = doc! {"$and": [
                        {"_id": &key},
                        {"$or": [{"v": {"$exists": false}, "n": {"$exists": false}}, {"exp": {"$lte": now - 100}}]},
                    ]};
                    let take = doc! {
                        "$set": {"v": &id, "exp": now + 30_000},
                        "$unset": {"n": ""},
                        "$inc": {"f": 1i64},
                        "$max": {"gc": never},
                    };
                    let taken = coll
                        .find_one_and_update(free, take)
                        .return_document(ReturnDocument::After)
                        .await
                        .is_ok_and(|d| d.is_some());
                    taken
                        && coll
                            .find_one_and_update(
                                // TODO(#13): send the library's own request text
                                doc! {"_id": &key, "v": &id},
                                doc! {"$unset": {"v": "", "exp": ""}},
                            )
                            .await
                            .is_ok_and(|d| d.is_some())
                }
            })
            .await;
            (
                "bare mongodb driver loop, the store's take + release requests",
                ops,
            )
        }
        _ => return Err("the raw MongoDB baseline covers incr, nonce and lock".into()),
    };
    Ok(super::bare_client(name, concurrency, ops))
}
