//! A create told the newest archive's listing digest writes nothing while the source's
//! listing (paths, types, sizes, modes, owners, times, link targets) matches, and archives as
//! soon as any of it changes.

use std::os::unix::fs::PermissionsExt;

use berth_agent::archive::{ArchiveProgress, CreateInput, CreateOutput};
use berth_shared::archive::{ArchiveId, ArchiveMeta};
use berth_shared::task::UnchangedSince;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::tree::build_sample;
use super::{Backend, Env, chain};

/// One change to the source.
type Change<'a> = Box<dyn Fn() + 'a>;

async fn create(env: &Env, since: Option<&CreateOutput>) -> CreateOutput {
    let (progress, _) = watch::channel(ArchiveProgress::default());
    let input = CreateInput {
        app: "web".into(),
        unchanged_since: since.map(|s| UnchangedSince {
            uuid: ArchiveId::new(s.uuid.as_str()).unwrap(),
            source_digest: s.source_digest.clone(),
        }),
        ..Default::default()
    };
    env.archiver
        .create(input, &progress, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)))
}

#[tokio::test]
async fn an_unchanged_source_writes_nothing_and_any_change_archives_again() {
    let env = Env::new(Backend::File).await;
    let dir = env.app_dir("web");
    build_sample(&dir);
    let first = create(&env, None).await;
    assert_eq!(first.source_digest.len(), 64, "{first:?}");
    let meta =
        ArchiveMeta::from_json(&env.get(&format!("_metadata/{}", first.uuid)).await).unwrap();
    assert_eq!(
        meta.source_digest.as_deref(),
        Some(first.source_digest.as_str())
    );
    let keys = env.keys().await;

    let same = create(&env, Some(&first)).await;
    assert_eq!(same.unchanged_since.as_deref(), Some(first.uuid.as_str()));
    assert_eq!(same.source_digest, first.source_digest);
    assert_eq!(
        env.keys().await,
        keys,
        "an unchanged source wrote something"
    );

    // Each kind of change shows: a touched mtime, a chmod, a new file, a removed one.
    let file = dir.join("README.md");
    let changes: Vec<(&str, Change)> = vec![
        (
            "touch",
            Box::new(|| {
                let f = std::fs::File::options().append(true).open(&file).unwrap();
                f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
                    .unwrap();
            }),
        ),
        (
            "chmod",
            Box::new(|| {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            }),
        ),
        (
            "add",
            Box::new(|| std::fs::write(dir.join("new.txt"), "x").unwrap()),
        ),
        (
            "remove",
            Box::new(|| std::fs::remove_file(dir.join("new.txt")).unwrap()),
        ),
    ];
    let mut newest = first;
    for (what, change) in changes {
        change();
        let next = create(&env, Some(&newest)).await;
        assert_eq!(next.unchanged_since, None, "{what} was not seen");
        assert_ne!(next.source_digest, newest.source_digest, "{what}");
        assert!(
            env.keys().await.iter().any(|k| k.contains(&next.uuid)),
            "{what}"
        );
        newest = next;
    }
}
