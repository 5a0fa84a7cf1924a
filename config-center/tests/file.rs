//! The file source: values in JSON files under a temporary directory, changed while a client
//! and a server run.

mod common;

use common::{Fixture, Store};
use gannet_config_center::ConfigSource;
use gannet_config_center::file::FileSource;

struct Files(FileSource);

impl Store for Files {
    async fn put(&self, key: &str, value: &str) {
        let path = self.0.path_of(key);
        tokio::fs::create_dir_all(path.parent().unwrap())
            .await
            .unwrap();
        // Write then rename, as config tools do, so a watch never reads half a file.
        let tmp = path.with_extension("json.tmp");
        tokio::fs::write(&tmp, value).await.unwrap();
        tokio::fs::rename(&tmp, &path).await.unwrap();
    }

    async fn delete(&self, key: &str) {
        tokio::fs::remove_file(self.0.path_of(key)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_config_changes_policies_live() {
    let dir = tempfile::tempdir().unwrap();
    let source = FileSource::new(dir.path());
    let store = Files(source.clone());
    let f = common::timeouts(source.clone(), &store).await;
    common::retry_and_breaker(&f, &store).await;
    common::limit(&f, &store).await;
    assert_eq!(source.get("cli/svc/rpc_timeout").await.unwrap(), None);
    f.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_created_later_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not-yet");
    let source = FileSource::new(&root);
    let f = Fixture::start(source.clone()).await;
    assert_eq!(f.timeout_ms(), None, "no file: defaults");
    Files(source)
        .put(common::TIMEOUT, r#"{"*": {"rpc_timeout_ms": 40}}"#)
        .await;
    common::eventually("the new file applies", || async {
        f.timeout_ms() == Some(40)
    })
    .await;
    f.server.shutdown().await.unwrap();
}
