//! Opening a buffer directory: the single-owner lock, private permissions, real I/O errors.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_directory_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    let second = Buffer::open(&cfg, &["dynamiq"], &mut Registry::default());
    assert!(
        matches!(second, Err(BufferError::Locked(ref p)) if *p == cfg.path),
        "{second:?}"
    );
    b.close().await.unwrap();
    let (_b, _) = open(&cfg, &["dynamiq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(vec![payload(0, 10)]).await.unwrap();
    let mut r = b.reader("dynamiq");
    drain(&mut r).await;
    r.ack(1).unwrap();
    b.flush().await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cfg.path), 0o700);
    for entry in fs::read_dir(&cfg.path).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_makes_a_loose_buffer_directory_and_its_files_private() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(vec![payload(0, 10)]).await.unwrap();
    b.close().await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let seg = segment_files(&cfg.path)[0].clone();
    fs::set_permissions(&cfg.path, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&seg, fs::Permissions::from_mode(0o644)).unwrap();
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.records, 1);
    assert_eq!(mode(&cfg.path), 0o700);
    assert_eq!(mode(&seg), 0o600);
    b.close().await.unwrap();
}

#[test]
fn open_reports_a_real_io_problem_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let cfg = BufferConfig {
        path: file.join("buf"),
        ..config(dir.path())
    };
    let r = Buffer::open(&cfg, &["dynamiq"], &mut Registry::default());
    assert!(matches!(r, Err(BufferError::Io { .. })), "{r:?}");
}
