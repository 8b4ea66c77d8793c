/**
 * The task stream: which function ran on which worker over the last seconds,
 * one row per worker, one bar per task, drawn natively as SVG (no proxy, no
 * iframe). The events are those of `runtime.timeline()`: every node's (other
 * machines' through the head), or a Ray cluster's finished tasks. Rows are
 * grouped by node; each group is labelled with its node (and machine) on the left.
 */

import { color, el } from './format';
import { ITaskEvent } from './types';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 300;
const ROW = 8;
const MAX_KEPT = 3000;
const MAX_HEIGHT = 120; // px of the chart; rows are squeezed past 12

export class TaskStream {
  readonly node: HTMLElement;
  private svg: SVGSVGElement;
  private lanes: HTMLElement;
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
    this.lanes = el('div', 'nbc-taskstream-lanes');
    const body = el('div', 'nbc-taskstream-body');
    body.append(this.lanes, this.svg);
    this.empty = el('div', 'nbc-muted nbc-taskstream-empty', 'no task finished recently');
    this.legend = el('div', 'nbc-taskstream-legend');
    this.node.append(title, body, this.empty, this.legend);
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
    const workers = lanes(this.events);
    const rows = new Map(workers.map((w, i) => [lane(w), i]));
    const height = Math.max(workers.length, 1) * ROW;
    const pixels = Math.min(Math.max(workers.length, 1) * 10, MAX_HEIGHT);
    this.svg.setAttribute('viewBox', `0 0 ${WIDTH} ${height}`);
    this.svg.style.height = `${pixels}px`;
    this.svg.replaceChildren();
    this.drawLanes(workers, pixels / Math.max(workers.length, 1));
    const counts = new Map<string, number>();
    for (const e of this.events) {
      const x0 = ((Math.max(e.start, start) - start) / this.window) * WIDTH;
      const x1 = ((Math.min(e.end, now) - start) / this.window) * WIDTH;
      const rect = document.createElementNS(SVG, 'rect');
      rect.setAttribute('x', x0.toFixed(2));
      rect.setAttribute('y', `${(rows.get(lane(e)) ?? 0) * ROW + 1}`);
      rect.setAttribute('width', Math.max(x1 - x0, 0.6).toFixed(2));
      rect.setAttribute('height', `${ROW - 2}`);
      rect.setAttribute('fill', e.ok ? color(e.name) : 'var(--jp-error-color1)');
      rect.setAttribute('data-name', e.name);
      rect.setAttribute('data-node', e.node);
      const tip = document.createElementNS(SVG, 'title');
      const where = `worker ${e.worker} (node ${e.node}${e.host ? ` on ${e.host}` : ''})`;
      tip.textContent = `${e.name} on ${where}: ${((e.end - e.start) * 1000).toFixed(1)} ms${e.ok ? '' : ', failed'}`;
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

  /** One label per node, level with its first row; its title names the machine and workers. */
  private drawLanes(workers: ITaskEvent[], rowPixels: number): void {
    const groups = new Map<string, { first: number; host: string; pids: number[] }>();
    workers.forEach((w, i) => {
      const group = groups.get(w.node) ?? { first: i, host: w.host ?? '', pids: [] };
      group.pids.push(w.worker);
      groups.set(w.node, group);
    });
    this.lanes.replaceChildren(
      ...[...groups.entries()].map(([node, g]) => {
        const label = el('span', 'nbc-taskstream-lane', node.slice(0, 8) || '?');
        label.dataset.node = node;
        label.style.top = `${g.first * rowPixels}px`;
        const on = g.host ? ` on ${g.host}` : '';
        label.title = `node ${node}${on}: worker${g.pids.length > 1 ? 's' : ''} ${g.pids.join(', ')}`;
        return label;
      })
    );
    this.lanes.style.height = this.svg.style.height;
    this.lanes.style.display = workers.length ? '' : 'none';
  }
}

/** The rows: one per worker of each node, grouped by node (one event stands for each). */
function lanes(events: ITaskEvent[]): ITaskEvent[] {
  const byLane = new Map<string, ITaskEvent>();
  for (const e of events) {
    if (!byLane.has(lane(e))) {
      byLane.set(lane(e), e);
    }
  }
  return [...byLane.values()].sort((a, b) =>
    a.node === b.node ? a.worker - b.worker : a.node < b.node ? -1 : 1
  );
}

function lane(e: ITaskEvent): string {
  return `${e.node}:${e.worker}`;
}

function key(e: ITaskEvent): string {
  return `${e.node}:${e.worker}:${e.start}`;
}
