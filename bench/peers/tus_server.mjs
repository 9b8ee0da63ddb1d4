// Stock tus-node (@tus/server + @tus/file-store, versions pinned in
// package.json / package-lock.json) as the peer bench/ingest.py measures
// Witness Sync against: `--door tus` and `--door tus-fsync`.
//
//   node bench/peers/tus_server.mjs --port 8123 --dir /tmp/uploads [--fsync]
//
// One Node.js process, as tus-node runs out of the box: JavaScript on one
// thread, file system calls on libuv's thread pool (4 threads by default).
// Uploads under /files, FileStore in --dir (a file per upload plus its
// `<id>.json` info file), on 127.0.0.1:<port>; no other option than the
// required ones, so what is measured is tus-node's defaults.
//
// --fsync (`tus-fsync`): every PATCH is durable before its 204. Stock
// FileStore.write() pipes the request body into an fs.WriteStream and
// returns the new offset once the stream has finished, i.e. once the bytes
// are in the page cache; PatchHandler then answers 204 (an onUploadFinish
// hook would not do: it only runs when a known Upload-Length is reached,
// never for a deferred-length upload's PATCHes). FsyncFileStore.write()
// awaits the stock write and then fsync(2)s the upload file (a new
// descriptor of the same inode; fsync flushes the inode's dirty pages and
// its size, which is what FileStore reads the offset from) before it
// returns, and PatchHandler awaits write() before it answers, so no 204
// goes out for bytes that are not on disk. create() likewise fsyncs the new
// empty file, its .json info file and the folder, so that an upload a PATCH
// was acknowledged for also has a durable name (POST is not in the measured
// window). The stock server (`tus`) is left exactly as it ships.
//
// Error answers (4xx/5xx) are logged as one JSON line each ({"status": ...})
// so that the bench's log scan tallies them; successful requests are not
// logged (tus-node logs nothing by default).

import fsProm from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { FileStore } from '@tus/file-store';
import { Server } from '@tus/server';

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    dir: { type: 'string' },
    fsync: { type: 'boolean', default: false },
  },
});
if (!opts.port || !opts.dir) {
  console.error('usage: node tus_server.mjs --port PORT --dir FOLDER [--fsync] [--host 127.0.0.1]');
  process.exit(2);
}

async function fsyncPath(file, flags = 'r') {
  const handle = await fsProm.open(file, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

class FsyncFileStore extends FileStore {
  async create(file) {
    const created = await super.create(file);
    await fsyncPath(this.resolve(file.id));
    await fsyncPath(this.configstore.resolve(file.id));
    await fsyncPath(this.directory);
    return created;
  }

  async write(readable, fileId, offset) {
    const newOffset = await super.write(readable, fileId, offset);
    await fsyncPath(this.resolve(fileId));
    return newOffset;
  }
}

const directory = path.resolve(opts.dir);
await fsProm.mkdir(directory, { recursive: true });
const Store = opts.fsync ? FsyncFileStore : FileStore;
const server = new Server({
  path: '/files',
  datastore: new Store({ directory }),
  onResponseError(req, error) {
    const status = error.status_code || 500;
    console.log(JSON.stringify({
      status, method: req.method, path: new URL(req.url).pathname,
      error: String(error.body || error.message || error).trim().slice(0, 200),
    }));
    return undefined; // tus-node's own answer
  },
});

const http = server.listen({ host: opts.host, port: Number(opts.port) }, () => {
  console.log(`tus-server: @tus/server on http://${opts.host}:${opts.port}/files, FileStore in ${directory}`
    + (opts.fsync ? ', fsync after every PATCH' : ''));
});
http.on('error', (error) => {
  console.log(`tus-server ERROR ${error.message}`);
  process.exit(1);
});

function stop(signal) {
  console.log(`tus-server: ${signal}, stopping`);
  http.close(() => process.exit(0));
  http.closeAllConnections();
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
process.on('uncaughtException', (error) => {
  console.log(`tus-server ERROR uncaught ${error.stack || error}`);
  process.exit(1);
});
