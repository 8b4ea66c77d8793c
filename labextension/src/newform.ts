/** The New cluster form: CPUs, GPUs, memory and custom resources. */

import { Widget } from '@lumino/widgets';

export interface INewCluster {
  num_cpus?: number;
  num_gpus?: number;
  memory?: number;
  resources?: Record<string, number>;
}

export class NewClusterForm extends Widget {
  constructor() {
    super();
    this.addClass('nbc-new-form');
    this.node.innerHTML = `
      <label>CPUs <input name="num_cpus" type="number" min="0" step="1" placeholder="all cores"></label>
      <label>GPUs <input name="num_gpus" type="number" min="0" step="1" placeholder="detected"></label>
      <label>Memory (GiB) <input name="memory" type="number" min="0" step="0.5" placeholder="70% of free"></label>
      <label>Custom resources <input name="resources" type="text" placeholder="alice=2, bob=1"></label>`;
  }

  /** The request body; throws with a readable message when a field is wrong. */
  getValue(): INewCluster {
    const field = (name: string) => (this.node.querySelector(`input[name="${name}"]`) as HTMLInputElement).value.trim();
    const number = (name: string): number | undefined => {
      const text = field(name);
      if (!text) {
        return undefined;
      }
      const value = Number(text);
      if (!Number.isFinite(value) || value < 0) {
        throw new Error(`${name.replace('num_', '')}: expected a non-negative number, got "${text}"`);
      }
      return value;
    };
    const out: INewCluster = {};
    const cpus = number('num_cpus');
    const gpus = number('num_gpus');
    const gib = number('memory');
    if (cpus !== undefined) {
      out.num_cpus = cpus;
    }
    if (gpus !== undefined) {
      out.num_gpus = gpus;
    }
    if (gib !== undefined) {
      out.memory = Math.round(gib * 2 ** 30);
    }
    const text = field('resources');
    if (text) {
      out.resources = {};
      for (const part of text.split(',')) {
        const [name, amount] = part.split('=').map(s => s.trim());
        const value = Number(amount);
        if (!name || !Number.isFinite(value) || value < 0) {
          throw new Error(`custom resources: write name=amount, e.g. alice=2 (got "${part.trim()}")`);
        }
        out.resources[name] = value;
      }
    }
    return out;
  }
}
