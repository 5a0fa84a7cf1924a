//! The file source: values in JSON files under a temporary directory, changed while a client
//! and a server run.

use gannet_config_center::ConfigSource;
use gannet_config_center::file::FileSource;
use gannet_conformance::config::{self as kit, Fixture, Store};

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
    let f = kit::timeouts(source.clone(), &store).await;
    kit::retry_and_breaker(&f, &store).await;
    kit::limit(&f, &store).await;
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
        .put(kit::TIMEOUT, r#"{"*": {"rpc_timeout_ms": 40}}"#)
        .await;
    kit::eventually("the new file applies", || async {
        f.timeout_ms() == Some(40)
    })
    .await;
    f.server.shutdown().await.unwrap();
}
