/** Match cards (evidence frame beside the reference, timeline, decisions) and the clip timeline. */
import { api, type Box, type Decisions, type Effective, type Match, type Report, type Segment, type Verdict } from './api';
import { chip, fmtDate, fmtTime, h, nextId, toast } from './dom';

export interface CardOptions {
  side: 'owner' | 'platform';
  title: string;
  subtitle: string;
  verdict: Verdict;
  effective: Effective;
  score: number;
  kind: string;
  segments: Segment[];
  durationSec?: number;
  timeSec?: number;
  box?: Box;
  reason?: string;
  frameSrc: string;
  refSrc?: string;
  matchId?: string;
  decisions?: Decisions;
  scanHref?: string;
  /** The owner's character page, where a negative example added from this match is listed. */
  characterHref?: string;
}

const VERDICT_TEXT: Record<Effective, string> = { match: 'Match', review: 'Needs review', clear: 'Clear', allowed: 'Allowed (licensed)' };
const DECISION_TEXT: Record<string, string> = { licensed: 'Licensed', false_match: 'False match', confirmed: 'Confirmed', dismissed: 'Dismissed' };

/** A horizontal bar: the clip from 0 to its duration, the segments where the character appears, the evidence moment. */
export function timeline(segments: Segment[], durationSec: number | undefined, kind: string, timeSec?: number, label?: string): HTMLElement {
  const dur = durationSec && durationSec > 0 ? durationSec : Math.max(1, ...segments.map((s) => s.endSec));
  const where = segments.map((s) => `${fmtTime(s.startSec)}–${fmtTime(s.endSec)}`).join(', ') || 'no segments';
  const bar = h(
    'div.timeline',
    { role: 'img', 'aria-label': `${label ? label + ': ' : ''}appears ${where} of a ${fmtTime(dur)} clip` },
    segments.map((s) =>
      h('span.seg', {
        class: `v-${kind}`,
        style: `left:${(100 * Math.max(0, s.startSec)) / dur}%;width:${(100 * Math.max(0, Math.min(dur, s.endSec) - s.startSec)) / dur}%`,
        title: `${fmtTime(s.startSec)}–${fmtTime(s.endSec)}`,
      }),
    ),
    timeSec !== undefined ? h('span.mark', { style: `left:${(100 * timeSec) / dur}%`, title: `evidence frame at ${fmtTime(timeSec)}` }) : null,
  );
  return h('div.timeline-wrap', null, bar, h('div.axis', { 'aria-hidden': 'true' }, h('span', null, '0'), h('span', null, fmtTime(dur / 2)), h('span', null, fmtTime(dur))));
}

/** Every character of a report on one shared timeline. */
export function timelineOverview(r: Report): HTMLElement {
  return h(
    'div.overview',
    null,
    r.matches.map((m) => [h('div.name', { title: m.name }, m.name), timeline(m.segments, r.durationSec, m.effectiveVerdict ?? m.verdict, undefined, m.name)]),
  );
}

/** The evidence frame with the detected box drawn on it (box in frame pixels). */
function frameFigure(src: string, box: Box | undefined, caption: string): HTMLElement {
  const img = h('img', { src, alt: `Evidence frame: ${caption}` });
  const wrap = h('div.frame', null, img);
  if (box) {
    const overlay = h('div.box', { 'aria-hidden': 'true' });
    const place = () => {
      const w = img.naturalWidth;
      const ht = img.naturalHeight;
      if (!w || !ht) return;
      overlay.style.left = `${(100 * box.x) / w}%`;
      overlay.style.top = `${(100 * box.y) / ht}%`;
      overlay.style.width = `${(100 * box.width) / w}%`;
      overlay.style.height = `${(100 * box.height) / ht}%`;
      wrap.append(overlay);
    };
    if (img.complete) place();
    img.addEventListener('load', place);
  }
  return h('figure', null, wrap, h('figcaption', null, caption, box ? ' · the yellow box marks where it was found' : ''));
}

function decidedLine(d: Decisions | undefined, characterHref?: string): HTMLElement | null {
  const parts = [d?.owner && { ...d.owner, who: 'rightsholder' }, d?.platform && { ...d.platform, who: 'platform' }].filter(Boolean) as Array<{ decision: string; by: string; at: string; note?: string; negativeReferenceId?: string }>;
  if (!parts.length) return null;
  return h(
    'div.decided',
    null,
    parts.map((p) =>
      h(
        'p',
        { style: 'margin:0' },
        chip(p.decision === 'licensed' ? 'allowed' : p.decision === 'confirmed' ? 'match' : 'clear', DECISION_TEXT[p.decision] ?? p.decision),
        ` by ${p.by} on ${fmtDate(p.at)}`,
        p.note ? ` — “${p.note}”` : '',
        // The negative example outlives the decision, so say where it is managed.
        p.negativeReferenceId ? [' · ', chip('negative', 'Added as a negative example'), characterHref ? [' ', h('a', { href: characterHref }, 'see it among the references')] : ''] : '',
      ),
    ),
  );
}

export function evidenceCard(o: CardOptions): HTMLElement {
  const titleId = nextId('m');
  const changed = o.effective !== o.verdict;
  const head = h(
    'div.match-head',
    null,
    h('div', null, h('h3', { id: titleId }, o.title), h('div.meta', null, o.subtitle)),
    h(
      'div.chips',
      { 'data-testid': 'verdict' },
      chip(o.effective, VERDICT_TEXT[o.effective]),
      changed ? chip('was', `scan said ${VERDICT_TEXT[o.verdict].toLowerCase()}`) : null,
    ),
  );
  const pair = h(
    'div.pair',
    null,
    frameFigure(o.frameSrc, o.box, o.timeSec !== undefined ? `Frame at ${fmtTime(o.timeSec)}` : 'Evidence frame'),
    o.refSrc
      ? h('figure', null, h('div.refimg', null, h('img', { src: o.refSrc, alt: `Best matching reference of ${o.title}`, loading: 'lazy' })), h('figcaption', null, 'Best matching reference'))
      : null,
  );
  const facts = h(
    'dl.facts',
    null,
    h('div', null, h('dt', null, 'Score'), h('dd.score', null, h('meter', { min: '0', max: '1', value: String(o.score), 'aria-label': 'Score' }), o.score.toFixed(2))),
    h('div', null, h('dt', null, 'Kind'), h('dd', null, o.kind === 'copy' ? 'Copy of the art' : 'Likeness')),
    h('div', null, h('dt', null, 'On screen'), h('dd', null, o.segments.map((s) => `${fmtTime(s.startSec)}–${fmtTime(s.endSec)}`).join(', ') || '—')),
    o.reason ? h('div', null, h('dt', null, 'Why'), h('dd', { style: 'font-weight:400' }, o.reason)) : null,
  );
  const card = h('article.match', { 'aria-labelledby': titleId, 'data-match': o.matchId ?? '' });
  const decision = h('div.decision');
  const mine = o.side === 'owner' ? o.decisions?.owner : o.decisions?.platform;
  if (o.matchId) {
    const note = h('input', { type: 'text', maxlength: '1000', autocomplete: 'off' });
    const noteId = nextId('note');
    note.id = noteId;
    const err = h('p.error', { role: 'alert' });
    const negative = h('input', { type: 'checkbox', id: nextId('neg') });
    const decide = async (decision: string | null) => {
      err.textContent = '';
      try {
        const addNegative = decision === 'false_match' && negative.checked;
        const body = { decision, ...(note.value.trim() ? { note: note.value.trim() } : {}), ...(addNegative ? { addNegative } : {}) };
        const m = await api<Match>(`/v1/matches/${encodeURIComponent(o.matchId!)}/decision`, decision ? { method: 'PUT', body } : { method: 'DELETE' });
        const next = evidenceCard({ ...o, decisions: m.decisions, effective: m.effectiveVerdict });
        card.replaceWith(next);
        (next.querySelector('.decision button') as HTMLElement | null)?.focus();
        const learned = addNegative && m.decisions?.owner?.negativeReferenceId ? ' The marked region was added as a negative example of the character.' : '';
        toast(decision ? `Marked ${DECISION_TEXT[decision].toLowerCase()}: now ${VERDICT_TEXT[m.effectiveVerdict].toLowerCase()}.${learned}` : 'Decision undone.');
      } catch (x) {
        err.textContent = x instanceof Error ? x.message : String(x);
      }
    };
    const buttons =
      o.side === 'owner'
        ? [
            h('button.btn.ok', { type: 'button', on: { click: () => void decide('licensed') } }, 'Mark licensed'),
            h('button.btn.danger', { type: 'button', on: { click: () => void decide('false_match') } }, 'Not my character (false match)'),
          ]
        : [
            h('button.btn.danger', { type: 'button', on: { click: () => void decide('confirmed') } }, 'Confirm match'),
            h('button.btn.ok', { type: 'button', on: { click: () => void decide('dismissed') } }, 'Dismiss'),
          ];
    decision.append(
      ...[
        decidedLine(o.decisions, o.side === 'owner' ? o.characterHref : undefined),
        mine
          ? h('div.actions', null, h('button.btn', { type: 'button', on: { click: () => void decide(null) } }, 'Undo my decision'))
          : h(
              'div.form-row',
              null,
              h('div.field', null, h('label', { for: noteId }, 'Note (optional)'), note),
              h('div.actions', { role: 'group', 'aria-label': `Decide on ${o.title}` }, ...buttons),
            ),
        o.side === 'owner' && !mine
          ? h('p.hint', { style: 'margin:0' }, negative, ' ', h('label', { for: negative.id }, 'Also add as a negative example'), ' (with “Not my character”): the region marked in the frame (or the whole frame) joins this character’s references as a look-alike it is not, so it stops being reported as this character. It stays if you undo the decision; remove it on the character page.')
          : null,
        o.side === 'owner' && !mine ? h('p.hint', { style: 'margin:0' }, 'Licensed: the use is allowed; later scans of this same video come out clear. False match: not your character; helps calibrate Kagami.') : null,
        err,
      ].filter((x): x is HTMLElement => !!x),
    );
  }
  card.append(
    head,
    h(
      'div.match-body',
      null,
      pair,
      facts,
      timeline(o.segments, o.durationSec, o.effective, o.timeSec, o.title),
      o.scanHref ? h('p', { style: 'margin:0' }, h('a', { href: o.scanHref }, 'Open the whole scan report')) : null,
      o.matchId ? decision : null,
    ),
  );
  return card;
}
