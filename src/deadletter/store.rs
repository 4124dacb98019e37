//! The runtime side of the store: [`DeadLetterStore`] appends dead-lettered runs durably
//! (written, fsynced, a new file's directory entry synced) and keeps the directory under its
//! bound by removing the oldest files first.

use super::*;

#[derive(Debug)]
struct Current {
    path: PathBuf,
    file: File,
    size: u64,
}

#[derive(Debug)]
struct Writer {
    dir: PathBuf,
    rotate_bytes: u64,
    max_bytes: u64,
    current: Option<Current>,
    /// The store's files, oldest first (the current one last), with their sizes; `None` until
    /// the directory was listed (at the first append).
    files: Option<VecDeque<(PathBuf, u64)>>,
    /// Sum of the sizes in `files`.
    total: u64,
}

impl Writer {
    /// Lists the files already in the directory (once), so that they count toward the bound.
    fn scan(&mut self) -> Result<(), DeadLetterError> {
        if self.files.is_some() {
            return Ok(());
        }
        let mut files = VecDeque::new();
        let mut total = 0;
        for path in list_files(&self.dir)? {
            let size = std::fs::metadata(&path).map_err(io(&path))?.len();
            total += size;
            files.push_back((path, size));
        }
        self.files = Some(files);
        self.total = total;
        Ok(())
    }

    fn append(&mut self, lines: &[u8], runs: u64) -> Result<AppendReport, DeadLetterError> {
        self.scan()?;
        let need = lines.len() as u64;
        let mut report = AppendReport::default();
        if need > self.max_bytes {
            report.refused_runs = runs;
            report.store_bytes = self.total;
            return Ok(report);
        }
        let rotate = self
            .current
            .as_ref()
            .is_some_and(|c| c.size > 0 && c.size + need > self.rotate_bytes);
        if rotate {
            self.current = None;
        }
        report.evicted_runs = self.evict_for(need)?;
        if self.current.is_none() {
            let created = self.create_file()?;
            self.files_mut().push_back((created.path.clone(), 0));
            self.current = Some(created);
        }
        let Some(cur) = self.current.as_mut() else {
            unreachable!("a file was just opened");
        };
        let result = cur
            .file
            .write_all(lines)
            .and_then(|()| cur.file.sync_data());
        match result {
            Ok(()) => {
                cur.size += need;
                self.grow_last(need);
                report.written_runs = runs;
                report.store_bytes = self.total;
                Ok(report)
            }
            Err(source) => {
                let path = cur.path.clone();
                // What a failed write left in the file still counts toward the bound.
                let written = std::fs::metadata(&path)
                    .map(|m| m.len())
                    .unwrap_or(cur.size)
                    .saturating_sub(cur.size);
                self.grow_last(written);
                // Never continue after a failed write: the next append starts a fresh file.
                self.current = None;
                Err(DeadLetterError::Io { path, source })
            }
        }
    }

    /// Removes the oldest files until `need` more bytes fit under the bound; returns the runs
    /// they held.
    fn evict_for(&mut self, need: u64) -> Result<u64, DeadLetterError> {
        let mut evicted = 0;
        let mut removed = false;
        while self.total + need > self.max_bytes {
            let Some((path, size)) = self.files_mut().pop_front() else {
                break;
            };
            if self.current.as_ref().is_some_and(|c| c.path == path) {
                self.current = None;
            }
            let runs = count_lines(&path);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.files_mut().push_front((path.clone(), size));
                    return Err(io(&path)(e));
                }
            }
            self.total -= size;
            evicted += runs;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(evicted)
    }

    fn files_mut(&mut self) -> &mut VecDeque<(PathBuf, u64)> {
        self.files.get_or_insert_with(VecDeque::new)
    }

    /// Adds `bytes` to the newest file's size (the one being written).
    fn grow_last(&mut self, bytes: u64) {
        if let Some(last) = self.files_mut().back_mut() {
            last.1 += bytes;
        }
        self.total += bytes;
    }

    fn create_file(&self) -> Result<Current, DeadLetterError> {
        let stamp: String = humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        for n in 0..1000u32 {
            // The counter keeps names unique (and in creation order) within one millisecond.
            let name = format!("{FILE_PREFIX}{stamp}-{n:03}{FILE_SUFFIX}");
            let path = self.dir.join(name);
            match private_fs::file_options()
                .append(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    sync_dir(&self.dir)?;
                    return Ok(Current {
                        path,
                        file,
                        size: 0,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Err(io(&self.dir)(std::io::Error::other(
            "no free dead-letter file name",
        )))
    }
}

/// Complete lines (runs) in a dead-letter file; 0 when it cannot be read.
fn count_lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|text| text.iter().filter(|&&b| b == b'\n').count() as u64)
        .unwrap_or(0)
}

/// Appends dead-lettered runs durably; cheap to clone (clones share the current file).
#[derive(Debug, Clone)]
pub struct DeadLetterStore {
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
}

impl DeadLetterStore {
    /// Opens the directory, unbounded (see [`with_max_bytes`](Self::with_max_bytes)): created
    /// 0700, or made 0700 (with its files 0600) if group or others can reach it
    /// ([`private_fs::ensure_private_dir`]). No file is created until the first run.
    pub fn open(dir: &Path) -> Result<Self, DeadLetterError> {
        private_fs::ensure_private_dir(dir).map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            writer: Arc::new(Mutex::new(Writer {
                dir: dir.to_path_buf(),
                rotate_bytes: DEFAULT_ROTATE_BYTES,
                max_bytes: u64::MAX,
                current: None,
                files: None,
                total: 0,
            })),
        })
    }

    /// Changes the rotation size (tests, tools).
    pub fn with_rotate_bytes(self, bytes: u64) -> Self {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rotate_bytes = bytes.max(1);
        self
    }

    /// Bounds the files to `bytes` in all (`forward.dead_letter_max_bytes`), the oldest removed
    /// first; files rotate at an eighth of the bound when that is below the rotation size.
    pub fn with_max_bytes(self, bytes: u64) -> Self {
        {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.max_bytes = bytes.max(1);
            w.rotate_bytes = w.rotate_bytes.min(w.max_bytes / ROTATIONS_PER_BOUND).max(1);
        }
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes and fsyncs the runs (removing the oldest files first if the bound requires it),
    /// blocking the calling thread.
    pub fn append_blocking(&self, entries: &[DeadLetter]) -> Result<AppendReport, DeadLetterError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if entries.is_empty() {
            return Ok(AppendReport {
                store_bytes: w.total,
                ..AppendReport::default()
            });
        }
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let lines: Vec<u8> = entries.iter().flat_map(|e| e.to_line(&at)).collect();
        w.append(&lines, entries.len() as u64)
    }

    /// [`append_blocking`](Self::append_blocking) on the blocking pool; returns once the runs
    /// are durable.
    pub async fn append(&self, entries: Vec<DeadLetter>) -> Result<AppendReport, DeadLetterError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append_blocking(&entries))
            .await
            .unwrap_or_else(|e| Err(io(&self.dir)(std::io::Error::other(e.to_string()))))
    }
}
