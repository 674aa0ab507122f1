// install-pinned.mjs - puts the packages web/package.json names (converse.js,
// playwright-core) into web/node_modules/ at the exact versions and
// sha512 integrity that web/package-lock.json records.  Run by
// scripts/build-web with the machine's node and npm (Node.js 18 and npm 9
// on Debian 12, or newer).
//
// Why not `npm ci`: converse.js 14 declares a dependency on a folder of
// its own tarball ("@converse/log": "file:src/log"), which npm 9 (Debian
// 12's) cannot install: it reads the folder before it has unpacked the
// tarball (ENOENT).  Nothing of converse.js's dependency tree is needed
// anyway: its dist/ is bundled, and playwright-core has no dependencies.
// So each package's own tarball is fetched with `npm pack NAME@VERSION`
// (the registry npm is configured for), its sha512 checked against the
// lockfile here (not only by npm), and unpacked.  A package already in
// place with the same integrity (the .parley-integrity file beside its
// package.json) is left alone.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const web = path.dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(fs.readFileSync(path.join(web, 'package.json')));
const lock = JSON.parse(fs.readFileSync(path.join(web, 'package-lock.json')));
const names = [...Object.keys(pkg.dependencies || {}),
    ...Object.keys(pkg.devDependencies || {})];

function fail(msg) {
    process.stderr.write(`install-pinned: ${msg}\n`);
    process.exit(1);
}

for (const name of names) {
    const entry = lock.packages && lock.packages[`node_modules/${name}`];
    if (!entry || !entry.version || !entry.integrity)
        fail(`${name}: no version and integrity in package-lock.json`);
    const [algo, want] = entry.integrity.split('-', 2);
    if (algo !== 'sha512')
        fail(`${name}: integrity is ${algo}, not sha512`);
    const dest = path.join(web, 'node_modules', name);
    const stamp = path.join(dest, '.parley-integrity');
    if (fs.existsSync(stamp) &&
        fs.readFileSync(stamp, 'utf8').trim() === entry.integrity)
        continue;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-web-'));
    try {
        const spec = `${name}@${entry.version}`;
        process.stdout.write(`install-pinned: ${spec}\n`);
        const out = execFileSync('npm', ['pack', spec, '--json',
            '--pack-destination', tmp, '--loglevel=error'],
            { cwd: tmp, encoding: 'utf8', timeout: 600000,
                stdio: ['ignore', 'pipe', 'inherit'] });
        const file = path.join(tmp, JSON.parse(out)[0].filename);
        const got = createHash('sha512').update(fs.readFileSync(file))
            .digest('base64');
        if (got !== want)
            fail(`${spec}: sha512 ${got} is not the lockfile's ${want}`);
        fs.rmSync(dest, { recursive: true, force: true });
        fs.mkdirSync(dest, { recursive: true });
        execFileSync('tar', ['-xzf', file, '-C', dest, '--strip-components=1',
            '--no-same-owner', '-m'], { stdio: 'inherit' });
        fs.writeFileSync(stamp, entry.integrity + '\n');
    } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
    }
}
