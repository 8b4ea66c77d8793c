/**
 * The task stream: which function ran on which worker over the last seconds,
 * one row per worker, one bar per task, drawn natively as SVG (no proxy, no
 * iframe). The events are those of `runtime.timeline()`.
 */

import { color, el } from './format';
import { ITaskEvent } from './types';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 300;
const ROW = 8;
const MAX_KEPT = 3000;

export class TaskStream {
  readonly node: HTMLElement;
  private svg: SVGSVGElement;
  private legend: HTMLElement;
  private empty: HTMLElement;
  private events: ITaskEvent[] = [];

  /** @param window seconds shown, ending now */
  constructor(readonly window: number) {
    this.node = el('div', 'nbc-taskstream');
    const title = el('div', 'nbc-section-title', `Task stream (last ${window} s)`);
    this.svg = document.createElementNS(SVG, 'svg');
    this.svg.setAttribute('class', 'nbc-taskstream-chart');
    this.svg.setAttribute('preserveAspectRatio', 'none');
    this.empty = el('div', 'nbc-muted nbc-taskstream-empty', 'no task finished recently');
    this.legend = el('div', 'nbc-taskstream-legend');
    this.node.append(title, this.svg, this.empty, this.legend);
  }

  /** Add newly finished tasks (any order; duplicates are ignored). */
  add(events: ITaskEvent[]): void {
    const seen = new Set(this.events.map(key));
    for (const e of events) {
      if (!seen.has(key(e))) {
        this.events.push(e);
      }
    }
    if (this.events.length > MAX_KEPT) {
      this.events.sort((a, b) => a.end - b.end);
      this.events.splice(0, this.events.length - MAX_KEPT);
    }
  }

  /** Redraw the window ending at `now` (seconds since the epoch, the server's clock). */
  draw(now: number): void {
    const start = now - this.window;
    this.events = this.events.filter(e => e.end >= start);
    const workers = [...new Set(this.events.map(e => `${e.node}:${e.worker}`))].sort();
    const rows = new Map(workers.map((w, i) => [w, i]));
    const height = Math.max(workers.length, 1) * ROW;
    this.svg.setAttribute('viewBox', `0 0 ${WIDTH} ${height}`);
    this.svg.style.height = `${Math.min(Math.max(workers.length, 1) * 10, 120)}px`;
    this.svg.replaceChildren();
    const counts = new Map<string, number>();
    for (const e of this.events) {
      const x0 = ((Math.max(e.start, start) - start) / this.window) * WIDTH;
      const x1 = ((Math.min(e.end, now) - start) / this.window) * WIDTH;
      const rect = document.createElementNS(SVG, 'rect');
      rect.setAttribute('x', x0.toFixed(2));
      rect.setAttribute('y', `${(rows.get(`${e.node}:${e.worker}`) ?? 0) * ROW + 1}`);
      rect.setAttribute('width', Math.max(x1 - x0, 0.6).toFixed(2));
      rect.setAttribute('height', `${ROW - 2}`);
      rect.setAttribute('fill', e.ok ? color(e.name) : 'var(--jp-error-color1)');
      rect.setAttribute('data-name', e.name);
      const tip = document.createElementNS(SVG, 'title');
      tip.textContent = `${e.name} on worker ${e.worker} (node ${e.node}): ${((e.end - e.start) * 1000).toFixed(1)} ms${e.ok ? '' : ', failed'}`;
      rect.append(tip);
      this.svg.append(rect);
      counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
    }
    this.empty.style.display = this.events.length ? 'none' : '';
    this.legend.replaceChildren(
      ...[...counts.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([name, n]) => {
          const item = el('span', 'nbc-taskstream-name');
          const swatch = el('span', 'nbc-swatch');
          swatch.style.background = color(name);
          item.append(swatch, document.createTextNode(`${name} ×${n}`));
          item.dataset.name = name;
          return item;
        })
    );
  }
}

function key(e: ITaskEvent): string {
  return `${e.node}:${e.worker}:${e.start}`;
}
