/**
 * Kagami web console: a small single-page client of the API (hash routes, plain DOM).
 * Rightsholders: characters, references, match log with decisions. Platforms: screen clips,
 * reports, batches, review queue.
 */
import { api, ApiError, clearKey, getKey, setKey, upload, type Batch, type Character, type Me, type Scan } from './api';
import { chip, clear, field, fmtDate, fmtTime, h, pct, toast } from './dom';
import { evidenceCard, timelineOverview } from './evidence';

let me: Me | undefined;
/** Cancels timers of the current view when the route changes. */
let cleanups: Array<() => void> = [];
const main = () => document.getElementById('main')!;

const isOwner = () => me?.role === 'rightsholder' || me?.role === 'admin';
const isPlatform = () => me?.role === 'platform' || me?.role === 'admin';

function every(ms: number, fn: () => Promise<boolean | void>): void {
  let stopped = false;
  let t: number | undefined;
  const tick = async () => {
    if (stopped) return;
    let again: boolean | void = true;
    try {
      again = await fn();
    } catch {
      again = true;
    }
    if (again !== false && !stopped) t = window.setTimeout(tick, ms);
  };
  t = window.setTimeout(tick, ms);
  cleanups.push(() => {
    stopped = true;
    clearTimeout(t);
  });
}

function errorText(e: unknown): string {
  return e instanceof ApiError ? e.message : e instanceof Error ? e.message : String(e);
}

function page(title: string, ...rest: Array<Node | null>): void {
  document.title = `${title} · Kagami`;
  const h1 = h('h1', { tabindex: '-1' }, title);
  clear(main(), h('div.page-head', null, h('div', null, h1)), ...rest);
  h1.focus({ preventScroll: true });
}

function pageHead(): HTMLElement {
  return main().querySelector('.page-head') as HTMLElement;
}

// ------------------------------------------------------------------ sign in

function signIn(): void {
  document.getElementById('top')!.hidden = true;
  const input = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'kgm_…', name: 'key' });
  const err = h('p.error', { role: 'alert' });
  const btn = h('button.btn.primary', { type: 'submit' }, 'Sign in');
  const form = h(
    'form.panel',
    {
      on: {
        submit: async (e) => {
          e.preventDefault();
          err.textContent = '';
          btn.disabled = true;
          setKey(input.value.trim());
          try {
            me = await api<Me>('/v1/me');
            location.hash = home();
            void route();
          } catch (x) {
            clearKey();
            err.textContent = x instanceof ApiError && x.status === 401 ? 'That key was not accepted. Check it for typos, or ask your administrator for a new one.' : errorText(x);
            input.focus();
          } finally {
            btn.disabled = false;
          }
        },
      },
    },
    field('API key', input, 'The key your Kagami administrator gave you (it starts with kgm_). It is kept only for this browser tab.'),
    err,
    h('div.actions', null, btn),
  );
  document.title = 'Sign in · Kagami';
  clear(
    main(),
    h('div.signin', null, h('div.brand-big', null, '鏡 Kagami'), h('p.muted', null, 'Screen video clips for registered characters.'), h('h1', null, 'Sign in'), form),
  );
  input.focus();
}

const home = () => (me?.role === 'platform' ? '#/scans' : '#/characters');

// ------------------------------------------------------------------ shell

function renderShell(): void {
  document.getElementById('top')!.hidden = false;
  const links: Array<[string, string]> = [];
  if (isOwner()) links.push(['#/characters', 'Characters'], ['#/matches', 'Match log']);
  if (isPlatform()) links.push(['#/scans', 'Scans'], ['#/reviews', 'Review queue'], ['#/batches', 'Batches']);
  clear(document.getElementById('nav')!, ...links.map(([href, text]) => h('a', { href }, text)));
  clear(
    document.getElementById('who')!,
    h('span', null, me!.name),
    chip('pending', me!.role),
    h('button.btn', { type: 'button', on: { click: () => signOut() } }, 'Sign out'),
  );
}

function markNav(hash: string): void {
  for (const a of document.querySelectorAll<HTMLAnchorElement>('#nav a')) {
    if (hash.startsWith(a.getAttribute('href')!)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function signOut(): void {
  clearKey();
  me = undefined;
  location.hash = '#/';
  signIn();
}

// ------------------------------------------------------------------ characters

const slug = (s: string) =>
  s
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9._:-]+/g, '-')
    .replace(/^[^a-z0-9]+|-+$/g, '')
    .slice(0, 128);

function thumb(src: string | undefined, alt: string): HTMLElement {
  return h('div.thumb', null, src ? h('img', { src, alt, loading: 'lazy' }) : h('span.none', null, 'No reference yet'));
}

async function charactersView(): Promise<void> {
  const name = h('input', { type: 'text', required: true, maxlength: '200', autocomplete: 'off' });
  const id = h('input', { type: 'text', required: true, maxlength: '128', pattern: '[A-Za-z0-9][A-Za-z0-9._:\\-]*', autocomplete: 'off' });
  const franchise = h('input', { type: 'text', maxlength: '200', autocomplete: 'off' });
  let idTouched = false;
  name.addEventListener('input', () => {
    if (!idTouched) id.value = slug(name.value);
  });
  id.addEventListener('input', () => (idTouched = id.value !== ''));
  const err = h('p.error', { role: 'alert' });
  const form = h(
    'form.panel',
    {
      'aria-labelledby': 'new-char',
      on: {
        submit: async (e) => {
          e.preventDefault();
          err.textContent = '';
          try {
            const c = await api<Character>('/v1/characters', { method: 'POST', body: { id: id.value.trim(), name: name.value.trim(), ...(franchise.value.trim() ? { franchise: franchise.value.trim() } : {}) } });
            toast(`Registered ${c.name}. Now add reference images.`);
            location.hash = `#/characters/${encodeURIComponent(c.id)}`;
          } catch (x) {
            err.textContent = errorText(x);
          }
        },
      },
    },
    h('h2', { id: 'new-char' }, 'Register a character'),
    h(
      'div.form-row',
      null,
      field('Name', name),
      field('ID', id, 'Unique and permanent; letters, digits, . _ : -'),
      field('Franchise (optional)', franchise),
      h('button.btn.primary', { type: 'submit' }, 'Register'),
    ),
    err,
  );
  const list = h('div', { 'aria-live': 'polite' }, h('p.muted', null, 'Loading characters…'));
  page('Characters', form, h('h2', null, 'Your characters'), list);
  pageHead().firstElementChild!.append(h('p.muted', null, 'Characters you hold the rights to, and the reference art Kagami recognises them by.'));
  const { characters } = await api<{ characters: Character[] }>('/v1/characters');
  if (!characters.length) {
    clear(list, h('div.empty', null, 'No characters yet. Register one above, then upload reference images of it.'));
    return;
  }
  clear(
    list,
    h(
      'div.grid',
      null,
      characters.map((c) => {
        const ready = c.references.filter((r) => r.status === 'ready' && !r.negative);
        const negatives = c.references.filter((r) => r.negative).length;
        const pending = c.references.filter((r) => r.status === 'pending').length;
        const failed = c.references.filter((r) => r.status === 'failed').length;
        const warned = c.references.filter((r) => r.warnings.length).length;
        const href = `#/characters/${encodeURIComponent(c.id)}`;
        return h(
          'article.card',
          null,
          h('a.cover', { href, tabindex: '-1', 'aria-hidden': 'true' }, thumb(ready[0] && `/v1/references/${encodeURIComponent(ready[0].id)}/image`, '')),
          h(
            'div.body',
            null,
            h('h3', null, h('a', { href }, c.name)),
            h('span.muted.small', null, c.id, c.franchise ? ` · ${c.franchise}` : ''),
            h(
              'div.chips',
              null,
              chip(ready.length ? 'ready' : 'pending', `${ready.length} ready`),
              pending ? chip('pending', `${pending} processing`) : null,
              failed ? chip('failed', `${failed} failed`) : null,
              warned ? chip('warn', `${warned} with warnings`) : null,
              negatives ? chip('negative', `${negatives} negative example${negatives > 1 ? 's' : ''}`) : null,
            ),
          ),
        );
      }),
    ),
  );
}

async function characterView(id: string): Promise<void> {
  let c = await api<Character>(`/v1/characters/${encodeURIComponent(id)}`);
  const name = h('input', { type: 'text', required: true, value: c.name, maxlength: '200' });
  const franchise = h('input', { type: 'text', value: c.franchise ?? '', maxlength: '200' });
  const renameErr = h('p.error', { role: 'alert' });
  const rename = h(
    'form.panel',
    {
      'aria-labelledby': 'details',
      on: {
        submit: async (e) => {
          e.preventDefault();
          renameErr.textContent = '';
          try {
            c = await api<Character>(`/v1/characters/${encodeURIComponent(id)}`, { method: 'PATCH', body: { name: name.value.trim(), ...(franchise.value.trim() ? { franchise: franchise.value.trim() } : {}) } });
            main().querySelector('h1')!.textContent = c.name;
            toast('Saved.');
          } catch (x) {
            renameErr.textContent = errorText(x);
          }
        },
      },
    },
    h('h2', { id: 'details' }, 'Details'),
    h(
      'div.form-row',
      null,
      field('Name', name),
      field('Franchise', franchise),
      h('button.btn.primary', { type: 'submit' }, 'Save'),
      h(
        'button.btn.danger',
        {
          type: 'button',
          on: {
            click: async () => {
              if (!confirm(`Delete ${c.name} and all its reference images? Scans will no longer find it.`)) return;
              await api(`/v1/characters/${encodeURIComponent(id)}`, { method: 'DELETE' });
              toast(`Deleted ${c.name}.`);
              location.hash = '#/characters';
            },
          },
        },
        'Delete character',
      ),
    ),
    renameErr,
  );

  const fileInput = h('input', { type: 'file', accept: 'image/*', multiple: true, id: 'ref-files' });
  const status = h('div.progress', { 'aria-live': 'polite' });
  const drop = h(
    'div.drop',
    null,
    h('p', null, h('strong', null, 'Drag reference images here'), ' or choose files.'),
    h('p.hint', null, 'PNG, JPEG or WebP; clear art of the character, ideally on a plain or transparent background, at least 128 px on its short side.'),
    h('label', { for: 'ref-files', class: 'sr-only' }, 'Reference images'),
    fileInput,
  );
  const negativeBox = h('input', { type: 'checkbox', id: 'ref-negative' });
  const negativeField = h(
    'p.hint',
    null,
    negativeBox,
    ' ',
    h('label', { for: 'ref-negative' }, 'Upload as negative examples: look-alikes this character is not (another studio’s character, a generic design). Where one matches, weaker evidence for this character in the same frame is ignored.'),
  );
  const grid = h('div.grid', { 'aria-live': 'polite', id: 'refs' });

  async function send(files: File[]): Promise<void> {
    const images = files.filter((f) => f.type.startsWith('image/') || /\.(png|jpe?g|webp|gif|avif|tiff?)$/i.test(f.name));
    if (!images.length) {
      clear(status, h('p.error', { role: 'alert' }, 'Those are not images. Drop PNG, JPEG or WebP files.'));
      return;
    }
    const form = new FormData();
    for (const f of images) form.append('image', f, f.name);
    const bar = h('progress', { max: '1', value: '0', 'aria-label': 'Upload progress' });
    const label = h('span', null, `Uploading ${images.length} image${images.length > 1 ? 's' : ''}…`);
    clear(status, label, bar);
    try {
      const query = negativeBox.checked ? '?negative=true' : '';
      c = await upload<Character>(`/v1/characters/${encodeURIComponent(id)}/references${query}`, form, (p) => {
        bar.value = p;
        label.textContent = `Uploading ${images.length} image${images.length > 1 ? 's' : ''}: ${pct(p)}`;
      });
      clear(status, h('span', null, `Uploaded. Kagami is processing ${images.length === 1 ? 'it' : 'them'} now.`));
      renderRefs();
      poll();
    } catch (x) {
      clear(status, h('p.error', { role: 'alert' }, errorText(x)));
    }
    fileInput.value = '';
  }
  fileInput.addEventListener('change', () => void send([...(fileInput.files ?? [])]));
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    void send([...(e.dataTransfer?.files ?? [])]);
  });

  function renderRefs(): void {
    if (!c.references.length) {
      clear(grid, h('div.empty', null, 'No reference images yet. Scans cannot find this character until it has at least one ready reference.'));
      return;
    }
    clear(
      grid,
      c.references.map((r) => {
        const label = { pending: 'Processing', ready: 'Ready', failed: 'Failed' }[r.status];
        return h(
          'article.card',
          { 'data-ref': r.id },
          thumb(`/v1/references/${encodeURIComponent(r.id)}/image`, `Reference ${r.fileName}`),
          h(
            'div.body',
            null,
            h('h3', { title: r.fileName, style: 'overflow-wrap:anywhere' }, r.fileName),
            h('span.muted.small', null, `${r.width}×${r.height} px · added ${fmtDate(r.createdAt)}`),
            h(
              'div.chips',
              null,
              chip(r.status, label),
              r.negative ? chip('negative', 'Negative example', 'A look-alike this character is not') : null,
              r.warnings.length ? chip('warn', `${r.warnings.length} warning${r.warnings.length > 1 ? 's' : ''}`) : null,
            ),
            r.error ? h('p.error.small', null, r.error) : null,
            r.warnings.length ? h('ul.warnings', { 'aria-label': 'Quality warnings' }, r.warnings.map((w) => h('li', null, warningText(w)))) : null,
            h(
              'div.actions',
              null,
              h(
                'button.btn.danger',
                {
                  type: 'button',
                  'aria-label': `Remove reference ${r.fileName}`,
                  on: {
                    click: async () => {
                      if (!confirm(`Remove ${r.fileName}?`)) return;
                      await api(`/v1/references/${encodeURIComponent(r.id)}`, { method: 'DELETE' });
                      c = await api<Character>(`/v1/characters/${encodeURIComponent(id)}`);
                      renderRefs();
                      toast(`Removed ${r.fileName}.`);
                    },
                  },
                },
                'Remove',
              ),
            ),
          ),
        );
      }),
    );
  }
  let polling = false;
  function poll(): void {
    if (polling) return;
    polling = true;
    every(1200, async () => {
      c = await api<Character>(`/v1/characters/${encodeURIComponent(id)}`);
      renderRefs();
      const more = c.references.some((r) => r.status === 'pending');
      if (!more) {
        polling = false;
        clear(status, h('span', null, 'All references processed.'));
      }
      return more;
    });
  }

  page(
    c.name,
    rename,
    h('section.panel', { 'aria-labelledby': 'refs-h' }, h('h2', { id: 'refs-h' }, 'Reference images'), drop, negativeField, status, h('div', { style: 'margin-top:1rem' }, grid)),
  );
  pageHead().firstElementChild!.prepend(h('a.crumb', { href: '#/characters' }, '← Characters'));
  pageHead().firstElementChild!.append(h('p.muted', null, `ID ${c.id} · `, h('a', { href: `#/matches?character=${encodeURIComponent(c.id)}` }, 'see its matches')));
  renderRefs();
  if (c.references.some((r) => r.status === 'pending')) poll();
}

function warningText(w: string): string {
  const [code, ...rest] = w.split(': ');
  const title =
    {
      too_small: 'Too small',
      mostly_background: 'Mostly background',
      duplicate: 'Duplicate',
      conflicts_with_negative: 'Conflicts with a negative example',
      conflicts_with_reference: 'Conflicts with a reference',
    }[code] ?? code;
  return rest.length ? `${title}: ${rest.join(': ')}` : title;
}

// ------------------------------------------------------------------ matches (rightsholder)

async function matchesView(query: URLSearchParams): Promise<void> {
  const characterId = query.get('character') ?? '';
  const select = h('select', { id: 'match-filter' }, h('option', { value: '' }, 'All characters'));
  const list = h('div', { 'aria-live': 'polite' }, h('p.muted', null, 'Loading matches…'));
  page('Match log', h('div.panel', null, h('div.form-row', null, field('Character', select))), list);
  pageHead().firstElementChild!.append(h('p.muted', null, 'Every clip a platform screened in which Kagami found one of your characters. Mark allowed uses as licensed, and mistakes as false matches.'));
  const [{ characters }, { matches }] = await Promise.all([
    api<{ characters: Character[] }>('/v1/characters'),
    api<{ matches: import('./api').Match[] }>(`/v1/matches?limit=200${characterId ? `&characterId=${encodeURIComponent(characterId)}` : ''}`),
  ]);
  for (const c of characters) select.append(h('option', { value: c.id, selected: c.id === characterId }, c.name));
  select.addEventListener('change', () => (location.hash = `#/matches${select.value ? `?character=${encodeURIComponent(select.value)}` : ''}`));
  if (!matches.length) {
    clear(list, h('div.empty', null, characterId ? 'No matches of this character yet.' : 'No matches yet. When a platform screens a clip in which one of your characters appears, it shows up here.'));
    return;
  }
  clear(
    list,
    matches.map((m) =>
      evidenceCard({
        side: 'owner',
        title: m.characterName ?? m.characterId,
        subtitle: [`${m.video}`, m.platform ? `screened by ${m.platform}` : '', fmtDate(m.createdAt)].filter(Boolean).join(' · '),
        verdict: m.verdict,
        effective: m.effectiveVerdict,
        score: m.score,
        kind: m.kind,
        segments: m.segments,
        durationSec: m.evidence.durationSec,
        timeSec: m.evidence.timeSec,
        box: m.evidence.box,
        reason: m.evidence.reason,
        frameSrc: `/v1/matches/${encodeURIComponent(m.id)}/frame`,
        refSrc: m.evidence.referenceId ? `/v1/references/${encodeURIComponent(m.evidence.referenceId)}/image` : undefined,
        matchId: m.id,
        decisions: m.decisions,
        characterHref: `#/characters/${encodeURIComponent(m.characterId)}`,
      }),
    ),
  );
}

// ------------------------------------------------------------------ scans (platform)

async function scansView(): Promise<void> {
  const fileInput = h('input', { type: 'file', accept: 'video/*,.mp4,.mov,.mkv,.webm,.avi', id: 'clip-file' });
  const status = h('div.progress', { 'aria-live': 'polite' });
  const drop = h(
    'div.drop',
    null,
    h('p', null, h('strong', null, 'Drag a video clip here'), ' or choose a file.'),
    h('p.hint', null, 'MP4, MOV, MKV, WebM… Kagami samples frames and compares them with every registered character.'),
    h('label', { for: 'clip-file', class: 'sr-only' }, 'Video clip to screen'),
    fileInput,
  );
  async function send(file: File | undefined): Promise<void> {
    if (!file) return;
    const form = new FormData();
    form.append('video', file, file.name);
    const bar = h('progress', { max: '1', value: '0', 'aria-label': 'Progress' });
    const label = h('span', null, `Uploading ${file.name}…`);
    clear(status, label, bar);
    try {
      const s = await upload<Scan>('/v1/scans', form, (p) => {
        bar.value = p;
        label.textContent = `Uploading ${file.name}: ${pct(p)}`;
      });
      toast('Uploaded; screening started.');
      location.hash = `#/scans/${encodeURIComponent(s.id)}`;
    } catch (x) {
      clear(status, h('p.error', { role: 'alert' }, errorText(x)));
    }
  }
  fileInput.addEventListener('change', () => void send(fileInput.files?.[0]));
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    void send(e.dataTransfer?.files?.[0]);
  });
  const table = h('div', { 'aria-live': 'polite' }, h('p.muted', null, 'Loading scans…'));
  page('Scans', h('section.panel', { 'aria-labelledby': 'up-h' }, h('h2', { id: 'up-h' }, 'Screen a clip'), drop, status), h('h2', null, 'Recent scans'), table);
  pageHead().firstElementChild!.append(h('p.muted', null, 'Upload a clip to check it for registered characters before it goes public.'));
  const render = async () => {
    const { scans } = await api<{ scans: Scan[] }>('/v1/scans?limit=50');
    if (!scans.length) {
      clear(table, h('div.empty', null, 'No scans yet. Upload a clip above.'));
      return false;
    }
    clear(
      table,
      h(
        'div.table-wrap',
        null,
        h(
          'table',
          null,
          h('caption.sr-only', null, 'Recent scans'),
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Clip'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Verdict'), h('th', { scope: 'col' }, 'Characters'), h('th', { scope: 'col' }, 'Started'))),
          h(
            'tbody',
            null,
            scans.map((s) => {
              const v = s.report?.effectiveVerdict ?? s.report?.verdict;
              const found = s.report?.matches.filter((m) => (m.effectiveVerdict ?? m.verdict) !== 'clear').map((m) => m.name) ?? [];
              return h(
                'tr',
                null,
                h('td', null, h('a', { href: `#/scans/${encodeURIComponent(s.id)}` }, s.fileName)),
                h('td', null, chip(s.status, s.status === 'running' ? `running ${pct(s.progress)}` : s.status)),
                h('td', null, v ? chip(v) : s.error ? h('span.error.small', null, s.error) : '—'),
                h('td', null, found.join(', ') || '—'),
                h('td.small', null, fmtDate(s.createdAt)),
              );
            }),
          ),
        ),
      ),
    );
    return scans.some((s) => s.status === 'queued' || s.status === 'running');
  };
  if (await render()) every(2000, render);
}

async function scanView(id: string): Promise<void> {
  const body = h('div', { 'aria-live': 'polite' });
  page('Scan', body);
  pageHead().firstElementChild!.prepend(h('a.crumb', { href: '#/scans' }, '← Scans'));
  const render = async () => {
    const s = await api<Scan>(`/v1/scans/${encodeURIComponent(id)}`);
    main().querySelector('h1')!.textContent = s.fileName;
    document.title = `${s.fileName} · Kagami`;
    if (s.status === 'queued' || s.status === 'running') {
      clear(
        body,
        h(
          'div.panel',
          null,
          h('div.chips', null, chip(s.status, s.status === 'queued' ? 'Queued' : 'Scanning')),
          h('div.progress', null, h('span', null, s.status === 'queued' ? 'Waiting for a worker…' : `Scanning frames: ${pct(s.progress)}`), h('progress', { max: '1', value: String(s.progress), 'aria-label': 'Scan progress' })),
        ),
      );
      return true;
    }
    if (s.status === 'failed' || !s.report) {
      clear(body, h('div.panel', null, chip('failed', 'Failed'), h('p.error', { style: 'margin-top:.75rem' }, s.error ?? 'The scan failed.')));
      return false;
    }
    const r = s.report;
    const verdict = r.effectiveVerdict ?? r.verdict;
    const dl = h(
      'a.btn',
      { href: URL.createObjectURL(new Blob([JSON.stringify(r, null, 2)], { type: 'application/json' })), download: `${s.fileName.replace(/[^\w.-]+/g, '_')}.report.json` },
      'Download report (JSON)',
    );
    const summary = h(
      'div.panel',
      null,
      h(
        'div.match-head',
        { style: 'padding:0;border:0;margin-bottom:1rem' },
        h('div', null, h('div.chips', null, chip(verdict, `Clip verdict: ${verdict}`), verdict !== r.verdict ? chip('was', `scan said ${r.verdict}`) : null)),
        dl,
      ),
      h(
        'dl.facts',
        null,
        h('div', null, h('dt', null, 'Duration'), h('dd', null, fmtTime(r.durationSec))),
        h('div', null, h('dt', null, 'Frames sampled'), h('dd', null, r.framesSampled)),
        h('div', null, h('dt', null, 'Characters found'), h('dd', null, r.matches.filter((m) => (m.effectiveVerdict ?? m.verdict) !== 'clear').length)),
        h('div', null, h('dt', null, 'Scan time'), h('dd', null, fmtTime(r.elapsedSec))),
        h('div', null, h('dt', null, 'Finished'), h('dd', null, s.finishedAt ? fmtDate(s.finishedAt) : '—')),
      ),
      r.matches.length ? h('div', { style: 'margin-top:1.25rem' }, h('h2', null, 'Where they appear'), timelineOverview(r)) : h('p', { style: 'margin-top:1rem' }, 'No registered character was found in this clip.'),
    );
    clear(
      body,
      summary,
      r.matches.map((m) =>
        evidenceCard({
          side: 'platform',
          title: m.name,
          subtitle: `${m.owner} · ${m.characterId}`,
          verdict: m.verdict,
          effective: m.effectiveVerdict ?? m.verdict,
          score: m.score,
          kind: m.kind,
          segments: m.segments,
          durationSec: r.durationSec,
          timeSec: m.evidence.timeSec,
          box: m.evidence.box,
          reason: m.reason,
          frameSrc: `/v1/scans/${encodeURIComponent(s.id)}/evidence/${encodeURIComponent(m.characterId)}`,
          refSrc: `/v1/scans/${encodeURIComponent(s.id)}/reference/${encodeURIComponent(m.characterId)}`,
          matchId: m.matchId,
          decisions: m.decisions,
        }),
      ),
    );
    return false;
  };
  if (await render()) every(1000, render);
}

// ------------------------------------------------------------------ review queue

async function reviewsView(): Promise<void> {
  const list = h('div', { 'aria-live': 'polite' }, h('p.muted', null, 'Loading…'));
  page('Review queue', list);
  pageHead().firstElementChild!.append(h('p.muted', null, 'Matches Kagami was unsure about (verdict review) in your scans. Confirm real appearances; dismiss mistakes.'));
  const { reviews } = await api<{ reviews: import('./api').Match[] }>('/v1/reviews?limit=200');
  pageHead().firstElementChild!.append(h('p', null, chip(reviews.length ? 'review' : 'clear', `${reviews.length} waiting`)));
  if (!reviews.length) {
    clear(list, h('div.empty', null, 'Nothing to review. Matches with verdict “review” appear here until someone confirms or dismisses them.'));
    return;
  }
  clear(
    list,
    reviews.map((m) =>
      evidenceCard({
        side: 'platform',
        title: m.characterName ?? m.characterId,
        subtitle: [m.video, m.owner, fmtDate(m.createdAt)].join(' · '),
        verdict: m.verdict,
        effective: m.effectiveVerdict,
        score: m.score,
        kind: m.kind,
        segments: m.segments,
        durationSec: m.evidence.durationSec,
        timeSec: m.evidence.timeSec,
        box: m.evidence.box,
        reason: m.evidence.reason,
        frameSrc: `/v1/matches/${encodeURIComponent(m.id)}/frame`,
        refSrc: `/v1/scans/${encodeURIComponent(m.scanId)}/reference/${encodeURIComponent(m.characterId)}`,
        matchId: m.id,
        decisions: m.decisions,
        scanHref: `#/scans/${encodeURIComponent(m.scanId)}`,
      }),
    ),
  );
}

// ------------------------------------------------------------------ batches

const BATCHES = 'kagami_batches';
const knownBatches = (): string[] => JSON.parse(localStorage.getItem(BATCHES) ?? '[]') as string[];

async function batchesView(): Promise<void> {
  const dir = h('input', { type: 'text', placeholder: 'e.g. uploads/2024-06', autocomplete: 'off' });
  const paths = h('textarea', { placeholder: 'one path per line' });
  const err = h('p.error', { role: 'alert' });
  const form = h(
    'form.panel',
    {
      'aria-labelledby': 'nb',
      on: {
        submit: async (e) => {
          e.preventDefault();
          err.textContent = '';
          const list = paths.value.split('\n').map((p) => p.trim()).filter(Boolean);
          if (!list.length && !dir.value.trim()) {
            err.textContent = 'Give a folder or at least one path.';
            return;
          }
          try {
            const b = await api<Batch>('/v1/batches', { method: 'POST', body: list.length ? { paths: list } : { directory: dir.value.trim() } });
            localStorage.setItem(BATCHES, JSON.stringify([b.id, ...knownBatches().filter((x) => x !== b.id)].slice(0, 50)));
            location.hash = `#/batches/${encodeURIComponent(b.id)}`;
          } catch (x) {
            err.textContent = errorText(x);
          }
        },
      },
    },
    h('h2', { id: 'nb' }, 'Start a batch'),
    h('p.muted.small', null, 'Batches scan files already on the server, under its media root (KAGAMI_MEDIA_ROOT). Give a folder, or a list of files.'),
    h('div.form-row', null, field('Folder under the media root', dir), field('…or paths', paths)),
    h('div.actions', { style: 'margin-top:.75rem' }, h('button.btn.primary', { type: 'submit' }, 'Start batch')),
    err,
  );
  const list = h('div', null, h('p.muted', null, 'Loading…'));
  page('Batches', form, h('h2', null, 'Recent batches'), list);
  const { scans } = await api<{ scans: Scan[] }>('/v1/scans?limit=1000');
  const ids = [...new Set([...scans.map((s) => s.batchId).filter((x): x is string => !!x), ...knownBatches()])];
  const batches = (await Promise.all(ids.slice(0, 30).map((id) => api<Batch>(`/v1/batches/${encodeURIComponent(id)}`).catch(() => undefined)))).filter((b): b is Batch => !!b);
  batches.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  if (!batches.length) {
    clear(list, h('div.empty', null, 'No batches yet.'));
    return;
  }
  clear(
    list,
    h(
      'div.table-wrap',
      null,
      h(
        'table',
        null,
        h('caption.sr-only', null, 'Recent batches'),
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Batch'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Progress'), h('th', { scope: 'col' }, 'Started'))),
        h(
          'tbody',
          null,
          batches.map((b) =>
            h(
              'tr',
              null,
              h('td', null, h('a', { href: `#/batches/${encodeURIComponent(b.id)}` }, b.id.replace(/^batch_/, '').slice(0, 8))),
              h('td', null, chip(b.status === 'done' ? 'done' : 'running', b.status)),
              h('td', null, `${b.counts.done + b.counts.failed} of ${b.total}`),
              h('td.small', null, fmtDate(b.createdAt)),
            ),
          ),
        ),
      ),
    ),
  );
}

async function batchView(id: string): Promise<void> {
  const body = h('div');
  page('Batch', body);
  pageHead().firstElementChild!.prepend(h('a.crumb', { href: '#/batches' }, '← Batches'));
  const count = h('p', { 'aria-live': 'polite', 'aria-atomic': 'true' });
  const bar = h('progress', { max: '1', value: '0', 'aria-label': 'Batch progress' });
  const chipBox = h('div.chips');
  const q = encodeURIComponent(id);
  const downloads = h(
    'div.actions',
    null,
    h('a.btn', { href: `/v1/batches/${q}/report?format=csv`, download: `${id}.csv` }, 'Download CSV'),
    h('a.btn', { href: `/v1/batches/${q}/report?format=jsonl`, download: `${id}.jsonl` }, 'Download JSONL'),
  );
  const table = h('div', { style: 'margin-top:1rem' });
  clear(body, h('div.panel', null, chipBox, count, bar, h('div', { style: 'margin-top:1rem' }, downloads)), table);
  const render = async () => {
    const b = await api<Batch>(`/v1/batches/${q}`);
    main().querySelector('h1')!.textContent = `Batch ${b.id.replace(/^batch_/, '').slice(0, 8)}`;
    clear(chipBox, chip(b.status === 'done' ? 'done' : 'running', b.status === 'done' ? 'Done' : 'Running'));
    const finished = b.counts.done + b.counts.failed;
    count.textContent = `${finished} of ${b.total} clips screened${b.counts.failed ? ` · ${b.counts.failed} failed` : ''}${b.counts.running ? ` · ${b.counts.running} running` : ''}`;
    bar.value = b.progress;
    const { scans } = await api<{ scans: Scan[] }>('/v1/scans?limit=1000');
    const mine = scans.filter((s) => s.batchId === id);
    clear(
      table,
      h(
        'div.table-wrap',
        null,
        h(
          'table',
          null,
          h('caption.sr-only', null, 'Clips in this batch'),
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Clip'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Verdict'))),
          h(
            'tbody',
            null,
            mine.map((s) => {
              const v = s.report?.effectiveVerdict ?? s.report?.verdict;
              return h('tr', null, h('td', null, h('a', { href: `#/scans/${encodeURIComponent(s.id)}` }, s.fileName)), h('td', null, chip(s.status)), h('td', null, v ? chip(v) : s.error ? h('span.error.small', null, s.error) : '—'));
            }),
          ),
        ),
      ),
    );
    return b.status !== 'done';
  };
  if (await render()) every(1500, render);
}

// ------------------------------------------------------------------ router

async function route(): Promise<void> {
  for (const c of cleanups) c();
  cleanups = [];
  if (!getKey()) return signIn();
  if (!me) {
    try {
      me = await api<Me>('/v1/me');
    } catch {
      clearKey();
      return signIn();
    }
  }
  renderShell();
  const [path, qs] = (location.hash.replace(/^#/, '') || '/').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const query = new URLSearchParams(qs ?? '');
  markNav(`#/${parts[0] ?? ''}`);
  try {
    switch (parts[0]) {
      case 'characters':
        return await (parts[1] ? characterView(parts[1]) : charactersView());
      case 'matches':
        return await matchesView(query);
      case 'scans':
        return await (parts[1] ? scanView(parts[1]) : scansView());
      case 'reviews':
        return await reviewsView();
      case 'batches':
        return await (parts[1] ? batchView(parts[1]) : batchesView());
      default:
        location.replace(home());
    }
  } catch (e) {
    page(e instanceof ApiError && e.status === 404 ? 'Not found' : 'Something went wrong', h('p.error', { role: 'alert' }, errorText(e)), h('p', null, h('a', { href: home() }, 'Back to the start')));
  }
}

window.addEventListener('hashchange', () => void route());
window.addEventListener('kagami:unauthorized', () => {
  if (me) {
    clearKey();
    me = undefined;
    toast('Your key is no longer accepted; sign in again.');
    signIn();
  }
});
window.addEventListener('kagami:changed', () => void route());
void route();
